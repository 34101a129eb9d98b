from vadpipe.cli import app

app(prog_name="vadpipe")
