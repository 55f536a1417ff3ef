#!/bin/sh
# Rebuilds mini.o (committed) from mini.S with the host assembler.
set -eu
cd "$(dirname "$0")"
gcc -c -o mini.o mini.S
