"""What the pages of docs/ and the README say, beyond their shell commands (tests/project/test_docs.py runs
those): no page sends users to the developers' shared folder, and the Python examples run as written."""

from __future__ import annotations


def test_no_page_sends_users_to_the_developers_shared_folder():
    """``../shared`` exists on developer machines and in CI only; examples use the user's images or the samples."""
    from doc_commands import REPO, doc_files

    offending = [path.relative_to(REPO).as_posix() for path in doc_files() if "../shared" in path.read_text()]
    assert offending == []


def test_the_python_api_page_example_of_the_built_in_vqgan_runs():
    """docs/python-api.md described only f16 models (sides a multiple of 16, latents H/16); its built-in example
    (an f8 model) runs as written."""
    from doc_commands import REPO

    text = (REPO / "docs" / "python-api.md").read_text()
    assert "H/16" not in text
    section = text.split("## The built-in model", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile("import torch\n" + code, "docs/python-api.md", "exec"), namespace)
    assert tuple(namespace["again"].shape) == (1, 3, 64, 64) and namespace["art"].downsample_factor == 8


def test_the_architecture_tree_names_every_module():
    """docs/architecture.md's tree is the map of the package: every module of quantart_cli and of the stages is on
    it, under its own name."""
    import re

    from doc_commands import REPO

    text = (REPO / "docs" / "architecture.md").read_text()
    tree = text.split("```\n", 1)[1].split("```", 1)[0]
    named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", tree))
    modules = [*(REPO / "quantart_cli").rglob("*.py"), *(REPO / "stages" / "quantart_stages").glob("*.py")]
    missing = sorted(str(path.relative_to(REPO)) for path in modules
                     if path.stem != "__init__" and path.stem not in named)
    packages = sorted(str(path.relative_to(REPO)) for path in (REPO / "quantart_cli").rglob("__init__.py")
                      if path.parent.name not in named)
    assert missing == [] and packages == []
