import typer
app = typer.Typer(help="Benchmarks.")
