#!/usr/bin/env bash
# Debian's grpc_tools is installed for /usr/bin/python3 only (python3 on PATH
# may be another interpreter).
exec /usr/bin/python3 "$(dirname "$0")/python_stubs_test.py" -v
