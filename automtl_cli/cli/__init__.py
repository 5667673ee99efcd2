"""The command line: click commands only, each a thin shell over one library call."""
