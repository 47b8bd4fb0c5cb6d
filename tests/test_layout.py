"""The import direction of the design card: scripts -> helpers (training/, rendering/, evaluation/) ->
generators/, discriminators/ -> utils/. A script never imports another script: what two scripts share lives
in a package, so each script can be read top to bottom and changed without breaking another."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ('training', 'rendering', 'evaluation', 'generators', 'discriminators', 'utils')


def imported_modules(path):
    """Top-level names of every module a file imports (at any depth of the file: lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


def scripts():
    """Top-level files run as programs (they have a __main__ guard)."""
    return {path.stem: path for path in REPO.glob('*.py') if "if __name__ == '__main__'" in path.read_text()}


def test_scripts_do_not_import_scripts():
    programs = scripts()
    assert {'inference', 'train', 'eval', 'invert', 'extract_mesh', 'viewer'} <= set(programs)
    offenders = {name: sorted(imported_modules(path) & (set(programs) - {name})) for name, path in programs.items()}
    assert not {name: found for name, found in offenders.items() if found}


def test_packages_do_not_import_scripts():
    programs = set(scripts())
    offenders = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob('*.py'):
            found = sorted(imported_modules(path) & programs)
            if found:
                offenders[str(path.relative_to(REPO))] = found
    assert not offenders


def test_utils_import_no_model_or_helper_package():
    offenders = {}
    for path in (REPO / 'utils').rglob('*.py'):
        found = sorted(imported_modules(path) & {'training', 'rendering', 'evaluation', 'generators',
                                                 'discriminators'})
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert not offenders
