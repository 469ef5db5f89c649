#!/usr/bin/env python3
"""Prints README.md's imagectl command reference table from the binary's --help.

Usage: client/imagectl/readme_reference.py bazel-bin/client/imagectl
tests/imagectl_test.cc checks that the README names every command and flag.
"""
import re
import subprocess
import sys


def main(binary):
    top = subprocess.run([binary, '--help'], capture_output=True, text=True, check=True).stdout
    listing = top.split('Commands:\n')[1].split('\n\n')[0]
    print('| command | its flags |')
    print('| --- | --- |')
    for line in listing.split('\n'):
        path = line[2:32].strip()
        out = subprocess.run([binary] + path.split() + ['--help'], capture_output=True,
                             text=True, check=True).stdout
        usage = out.split('\n')[0].replace('imagectl ', '', 1).replace('|', '\\|')
        own = out.split('\nGlobal flags')[0]
        section = own.split('\nFlags:\n')[1] if '\nFlags:\n' in own else ''
        flags = ' '.join('`%s`' % f for f in re.findall(r'^  (--[\w-]+)', section, re.M))
        print('| `%s` | %s |' % (usage, flags or '-'))


if __name__ == '__main__':
    main(sys.argv[1])
