#!/bin/sh
# The remote suite (tests/test_remote) over the uring transport.
VGPU_TEST_TRANSPORT=uring exec "${top_builddir:-.}/tests/test_remote"
