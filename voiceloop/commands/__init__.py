"""``voiceloop`` sub-command groups, one module each; every command parses options and calls library code."""
