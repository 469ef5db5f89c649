#!/usr/bin/env bash
# Create and deploy end to end through Python stubs generated from api/.
# Debian's grpc_tools is installed for /usr/bin/python3 only (python3 on PATH
# may be another interpreter).
exec /usr/bin/python3 "$(dirname "$0")/python_e2e_test.py" -v
