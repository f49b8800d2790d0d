"""Test and benchmark support: real infrastructure behind one interface."""
