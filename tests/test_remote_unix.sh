#!/bin/sh
# The remote suite (tests/test_remote) over the unix transport.
VGPU_TEST_TRANSPORT=unix exec "${top_builddir:-.}/tests/test_remote"
