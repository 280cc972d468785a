"""Turning files into units of text: transcripts (Claude Code, Codex) and documents."""
