#!/bin/sh
# The short soak (16 clients x 5 s); `make soak` runs the long one.
b=${top_builddir:-.}
exec timeout 180 "$b/tests/soak" 16 5
