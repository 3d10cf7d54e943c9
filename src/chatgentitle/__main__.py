from chatgentitle.cli import cli

cli(prog_name="chatgentitle")
