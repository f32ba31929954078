"""Puts the repository root on sys.path so tests import `qdbev`, `projects` and `tools` helpers from any cwd."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
