"""Keeps the Bazel BUILD file in step with the Python files and their imports.

Bazel cannot fetch its rules here, so this test reads BUILD itself: BUILD is
Starlark, and for this file Starlark is Python syntax (calls with keyword
arguments), so `ast` parses it. `check_build` returns every problem as a message
that names the file or target and says what to add; the tests below run it on
the repository and, to show it can fail, on small broken copies.
"""

import ast
import dataclasses
import os
import posixpath
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Folders whose .py files (at any depth) must all be in some target's srcs.
SOURCE_DIRS = ('bottleneck', 'tests', 'bench')
# Top-level scripts that must be in some target's srcs.
TOP_LEVEL_SCRIPTS = ('retrain.py', 'label_image.py')
TEST_DIR = 'tests'

# Top-level name of an imported pip package -> its marker target in BUILD.
PIP_MARKERS = {
    'absl': 'expect_absl_installed',
    'h5py': 'expect_h5py_installed',
    # Keras 3 is installed as a dependency of tensorflow.
    'keras': 'expect_tensorflow_installed',
    'numpy': 'expect_numpy_installed',
    'PIL': 'expect_pil_installed',
    'pytest': 'expect_pytest_installed',
    'tensorflow': 'expect_tensorflow_installed',
    'tensorflow_hub': 'expect_tensorflow_hub_installed',
}


@dataclasses.dataclass
class Target:
  """One rule call in BUILD.

  Attributes:
    kind: the rule, e.g. 'py_library'.
    name: the target's name.
    srcs: paths relative to the repository root.
    deps: labels as written, e.g. ':errors'.
    main: the `main` attribute, or None.
    testonly: the `testonly` attribute.
    line: line of the call in BUILD.
  """
  kind: str
  name: str
  srcs: list
  deps: list
  main: str = None
  testonly: bool = False
  line: int = 0


@dataclasses.dataclass
class Import:
  """One import statement's reference to a module.

  Attributes:
    module: the dotted module name, e.g. 'bottleneck.errors'.
    statement: the statement as written, for messages.
    line: line of the statement.
    level: the number of leading dots of a relative import.
  """
  module: str
  statement: str
  line: int
  level: int = 0


def parse_build(text, filename='BUILD'):
  """Reads the targets of a BUILD file.

  Every top-level call with a `name` keyword is a target. srcs, deps, main and
  testonly must be literals; other attributes (e.g. data = glob(...)) are not
  read.

  Args:
    text: the BUILD file's contents.
    filename: name used in messages.

  Returns:
    (targets, problems): a list of Target and a list of messages.
  """
  try:
    tree = ast.parse(text, filename)
  except SyntaxError as e:
    return [], [f'{filename}:{e.lineno}: cannot parse as Starlark/Python: '
                f'{e.msg}.']
  targets, problems = [], []
  for statement in tree.body:
    call = statement.value if isinstance(statement, ast.Expr) else None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
      continue
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    if 'name' not in keywords:
      continue  # load(), package(), licenses(): not targets.
    values = {}
    for attribute in ('name', 'srcs', 'deps', 'main', 'testonly'):
      if attribute not in keywords:
        continue
      try:
        values[attribute] = ast.literal_eval(keywords[attribute])
      except ValueError:
        problems.append(
            f'{filename}:{call.lineno}: {call.func.id} `{attribute}` must be a '
            'literal (a string or a list of strings), so that '
            'tests/test_build.py can read it.')
    if not isinstance(values.get('name'), str):
      continue
    targets.append(Target(
        kind=call.func.id, name=values['name'],
        srcs=list(values.get('srcs', [])), deps=list(values.get('deps', [])),
        main=values.get('main'), testonly=bool(values.get('testonly', False)),
        line=call.lineno))
  return targets, problems


def python_files(root):
  """Lists the .py files that BUILD must cover.

  Args:
    root: the repository root.

  Returns:
    sorted paths relative to root, with '/' separators.
  """
  found = [script for script in TOP_LEVEL_SCRIPTS
           if os.path.isfile(os.path.join(root, script))]
  for folder in SOURCE_DIRS:
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
      dirnames[:] = [d for d in dirnames
                     if not d.startswith('.') and d != '__pycache__']
      for filename in filenames:
        if filename.endswith('.py'):
          path = os.path.relpath(os.path.join(dirpath, filename), root)
          found.append(path.replace(os.sep, '/'))
  return sorted(found)


def read_imports(root, path):
  """Lists the modules a Python file imports, at any depth in the file.

  Args:
    root: the repository root.
    path: the file, relative to root.

  Returns:
    a list of Import. `from a import b` gives 'a.b' (b may be a submodule).
  """
  with open(os.path.join(root, path), encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  imports = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        imports.append(Import(alias.name, f'import {alias.name}', node.lineno))
    elif isinstance(node, ast.ImportFrom):
      prefix = '.' * node.level + (node.module or '')
      for alias in node.names:
        module = '.'.join(p for p in (node.module, alias.name) if p)
        imports.append(Import(module, f'from {prefix} import {alias.name}',
                              node.lineno, node.level))
  return imports


def resolve_import(root, importer, imported):
  """Finds the repository file an import refers to.

  Absolute imports are looked up at the root (pytest.ini puts it on the path)
  and, for a file in a folder that is not a package (tests/, bench/), next to
  the file, as pytest and `python bench/x.py` do.

  Args:
    root: the repository root.
    importer: the importing file, relative to root.
    imported: an Import.

  Returns:
    the file relative to root, or None for a module outside the repository.
  """
  folder = os.path.dirname(importer)
  if imported.level:
    bases = [os.path.normpath(
        os.path.join(folder, *['..'] * (imported.level - 1)))]
  elif folder and not os.path.isfile(os.path.join(root, folder,
                                                  '__init__.py')):
    bases = [folder, '']
  else:
    bases = ['']
  parts = imported.module.split('.') if imported.module else []
  # `from a import b`: b is a submodule, or else a name defined in a.
  for candidate_parts in (parts, parts[:-1]):
    for base in bases:
      stem = os.path.join(base, *candidate_parts) if candidate_parts else base
      for candidate in (stem + '.py', os.path.join(stem, '__init__.py')):
        if os.path.isfile(os.path.join(root, candidate)):
          return os.path.normpath(candidate).replace(os.sep, '/')
    if imported.level == 0 and len(parts) < 2:
      break
  return None


def _find_cycle(graph):
  """Returns one cycle of a {node: [node]} graph as a list, or None."""
  state = {}  # node -> 'visiting' or 'done'
  stack = []

  def visit(node):
    state[node] = 'visiting'
    stack.append(node)
    for succ in graph.get(node, ()):
      if state.get(succ) == 'visiting':
        return stack[stack.index(succ):] + [succ]
      if succ not in state:
        cycle = visit(succ)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def import_needs(root, src, owners):
  """Says which deps a file's imports need.

  Args:
    root: the repository root.
    src: the file, relative to root.
    owners: {file: [Target with it in srcs]}.

  Returns:
    a list of (Import, file, labels): file is the repository file imported or
    None; labels lists the deps that satisfy the import, best first; labels is
    None for a pip package missing from PIP_MARKERS. Imports of the standard
    library, and of repository files in no target, are left out.
  """
  needs = []
  for imported in read_imports(root, src):
    path = resolve_import(root, src, imported)
    if path:
      targets = sorted(owners.get(path, []),
                       key=lambda t: t.kind != 'py_library')
      if path != src and targets:
        needs.append((imported, path, [':' + t.name for t in targets]))
      continue
    top = imported.module.split('.')[0]
    if imported.level or top in sys.stdlib_module_names:
      continue
    marker = PIP_MARKERS.get(top)
    needs.append((imported, None, [':' + marker] if marker else None))
  return needs


def check_build(root):
  """Checks root/BUILD against the Python files under root.

  Args:
    root: the repository root.

  Returns:
    a list of messages, empty when BUILD is in step with the code.
  """
  with open(os.path.join(root, 'BUILD'), encoding='utf-8') as f:
    targets, problems = parse_build(f.read())
  by_name = {}
  for target in targets:
    if target.name in by_name:
      problems.append(
          f'BUILD:{target.line}: target name {target.name!r} is already used '
          f'at line {by_name[target.name].line}; rename one of them.')
    else:
      by_name[target.name] = target

  # Every src exists; every dep ':x' is defined.
  owners = {}  # file -> targets with it in srcs
  for target in targets:
    for src in target.srcs:
      owners.setdefault(src, []).append(target)
      if not os.path.isfile(os.path.join(root, src)):
        problems.append(
            f'BUILD:{target.line}: {target.kind} {target.name!r} lists '
            f'{src!r} in srcs, but there is no such file; remove it or fix '
            'the path.')
    for dep in target.deps:
      if dep.startswith(':') and dep[1:] not in by_name:
        problems.append(
            f'BUILD:{target.line}: {target.kind} {target.name!r} depends on '
            f'{dep!r}, which BUILD does not define; add a target named '
            f'{dep[1:]!r} or remove the dep.')

  # Every Python file is in some target; every test file in a py_test.
  files = python_files(root)
  for path in files:
    if path not in owners:
      name = os.path.splitext(os.path.basename(path))[0]
      kind = ('py_test' if os.path.basename(path).startswith('test_')
              else 'py_library')
      try:
        deps = {labels[0] for _, _, labels in import_needs(root, path, owners)
                if labels}
      except SyntaxError:
        deps = set()
      if kind == 'py_test':
        conftest = posixpath.join(posixpath.dirname(path), 'conftest.py')
        deps |= {':' + t.name for t in owners.get(conftest, [])}
      deps = ', '.join(f'"{d}"' for d in sorted(deps))
      problems.append(
          f'{path} is in no target\'s srcs; add a {kind}(name = "{name}", '
          f'srcs = ["{path}"], deps = [{deps}]) to BUILD.')
  for path in files:
    if (path.startswith(TEST_DIR + '/') and
        os.path.basename(path).startswith('test_') and
        path in owners and
        not any(t.kind == 'py_test' for t in owners[path])):
      name = os.path.splitext(os.path.basename(path))[0]
      problems.append(
          f'{path} is a test file but no py_test has it in srcs; add a '
          f'py_test(name = "{name}", srcs = ["{path}"], ...) to BUILD.')

  # A module of a package (e.g. bottleneck/cache.py) has a py_library named
  # after it (:cache), and the package's __init__.py one named after the
  # package (:bottleneck), so that `from bottleneck import cache` means
  # ':cache' in deps.
  for path in files:
    folder, filename = posixpath.split(path)
    if (path not in owners or
        not os.path.isfile(os.path.join(root, folder, '__init__.py'))):
      continue
    name = (posixpath.basename(folder) if filename == '__init__.py'
            else os.path.splitext(filename)[0])
    if not any(t.kind == 'py_library' and t.name == name
               for t in owners[path]):
      problems.append(
          f'{path} is a module of a package, so its py_library must be named '
          f'{name!r}; rename '
          f'{", ".join(repr(t.name) for t in owners[path])} to {name!r}.')

  # A py_binary or py_test needs a main file: `main`, or the src <name>.py.
  for target in targets:
    if target.kind not in ('py_binary', 'py_test'):
      continue
    main = target.main or target.name + '.py'
    if not [s for s in target.srcs if s == main or s.endswith('/' + main)]:
      problems.append(
          f'BUILD:{target.line}: {target.kind} {target.name!r} has no main '
          f'file: name it after its script or set main = "<one of its srcs>".')

  # Tests depend on the conftest.py files pytest loads for them; conftest
  # targets are testonly, and only testonly targets may depend on them.
  for target in targets:
    if target.kind != 'py_test':
      continue
    for src in target.srcs:
      folder = posixpath.dirname(src)
      while True:
        conftest = (folder + '/' if folder else '') + 'conftest.py'
        conftest_owners = [t for t in owners.get(conftest, [])
                           if t is not target]
        if conftest_owners and not any(':' + t.name in target.deps
                                       for t in conftest_owners):
          problems.append(
              f'BUILD:{target.line}: py_test {target.name!r} runs with '
              f'{conftest}; add ":{conftest_owners[0].name}" to its deps.')
        if not folder:
          break
        folder = posixpath.dirname(folder)
  for target in targets:
    if (not target.testonly and
        any(os.path.basename(s) == 'conftest.py' for s in target.srcs)):
      problems.append(
          f'BUILD:{target.line}: {target.name!r} holds a conftest.py; add '
          'testonly = True to it.')
    if target.testonly or target.kind == 'py_test':
      continue
    for dep in target.deps:
      dep_target = by_name.get(dep[1:]) if dep.startswith(':') else None
      if dep_target and dep_target.testonly:
        problems.append(
            f'BUILD:{target.line}: {target.kind} {target.name!r} is not '
            f'testonly but depends on the testonly {dep!r}; remove the dep or '
            'add testonly = True.')

  # Each import of a repository file or a pip package has its target in deps.
  # A target's deps include those of a dep with the same srcs (TF Hub's
  # py_binary(srcs = ["x.py"], deps = [":x_main"]) pattern).
  def effective_deps(target, seen=()):
    deps = set(target.deps)
    for dep in target.deps:
      dep_target = by_name.get(dep[1:]) if dep.startswith(':') else None
      if (dep_target and dep_target.name not in seen and
          set(dep_target.srcs) & set(target.srcs)):
        deps |= effective_deps(dep_target, seen + (target.name,))
    return deps

  for target in targets:
    deps = effective_deps(target)
    for src in target.srcs:
      if not src.endswith('.py') or not os.path.isfile(os.path.join(root,
                                                                     src)):
        continue
      try:
        needs = import_needs(root, src, owners)
      except SyntaxError as e:
        problems.append(f'{src}:{e.lineno}: cannot parse: {e.msg}.')
        continue
      reported = set()
      for imported, path, labels in needs:
        if path in target.srcs or (labels and deps.intersection(labels)):
          continue
        if labels is None:
          top = imported.module.split('.')[0]
          if top not in reported:
            problems.append(
                f'{src}:{imported.line}: `{imported.statement}` imports '
                f'{top!r}, which is not in the repository, the standard '
                'library or PIP_MARKERS in tests/test_build.py; add the '
                'package to requirements.txt, a py_library(name = '
                f'"expect_{top.lower()}_installed") marker to BUILD, map it in '
                'PIP_MARKERS, and add the marker to the deps of '
                f'{target.name!r}.')
            reported.add(top)
        elif labels[0] not in reported:
          problems.append(
              f'{src}:{imported.line}: `{imported.statement}` needs '
              f'"{labels[0]}" in the deps of {target.kind} {target.name!r} '
              f'(BUILD:{target.line}); add it.')
          reported.add(labels[0])

  # Bazel rejects dependency cycles.
  graph = {t.name: [d[1:] for d in t.deps
                    if d.startswith(':') and d[1:] in by_name]
           for t in by_name.values()}
  cycle = _find_cycle(graph)
  if cycle:
    problems.append(
        'BUILD has a dependency cycle: ' + ' -> '.join(':' + n for n in cycle)
        + '; break it (the imports of these modules form the same cycle).')
  return problems


def test_build_file_matches_the_code():
  problems = check_build(ROOT)
  assert not problems, (
      'BUILD is out of step with the code:\n  ' + '\n  '.join(problems))


# A small repository for the negative tests: GOOD_BUILD is correct for it, and
# each case below breaks one thing.
SMALL_REPO = {
    'bottleneck/__init__.py': '"""Package."""\n',
    'bottleneck/errors.py': 'class Error(Exception):\n  pass\n',
    'bottleneck/config.py': 'import os\n\nfrom bottleneck import errors\n',
    'tests/conftest.py': 'import pytest\n',
    'tests/test_config.py': 'import pytest\n\nfrom bottleneck import config\n',
}

GOOD_BUILD = """
load("@rules_python//python:defs.bzl", "py_library", "py_test")

py_library(name = "expect_pytest_installed")

py_library(name = "bottleneck", srcs = ["bottleneck/__init__.py"])

py_library(
    name = "errors",
    srcs = ["bottleneck/errors.py"],
    deps = [":bottleneck"],
)

py_library(
    name = "config",
    srcs = ["bottleneck/config.py"],
    deps = [":bottleneck", ":errors"],
)

py_library(
    name = "conftest",
    testonly = True,
    srcs = ["tests/conftest.py"],
    deps = [":expect_pytest_installed"],
)

py_test(
    name = "test_config",
    srcs = ["tests/test_config.py"],
    deps = [":config", ":conftest", ":expect_pytest_installed"],
)
"""

CONFIG_TARGET = """py_library(
    name = "config",
    srcs = ["bottleneck/config.py"],
    deps = [":bottleneck", ":errors"],
)
"""


def write_repo(root, build_text, extra_files=None):
  """Writes SMALL_REPO (plus extra_files) and build_text as BUILD under root."""
  for path, text in {**SMALL_REPO, **(extra_files or {})}.items():
    os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
    with open(os.path.join(root, path), 'w', encoding='utf-8') as f:
      f.write(text)
  with open(os.path.join(root, 'BUILD'), 'w', encoding='utf-8') as f:
    f.write(build_text)


def test_checker_accepts_a_correct_small_repo(tmp_path):
  write_repo(str(tmp_path), GOOD_BUILD)
  assert check_build(str(tmp_path)) == []


def test_checker_reports_a_file_without_target(tmp_path):
  write_repo(str(tmp_path), GOOD_BUILD.replace(CONFIG_TARGET, ''))
  problems = check_build(str(tmp_path))
  assert any(p.startswith('bottleneck/config.py is in no target') and
             'py_library(name = "config"' in p for p in problems), problems


# (replace this, with this, extra files, a substring of the expected message)
BROKEN_CASES = {
    'duplicate name': (
        'name = "config"', 'name = "errors"', None,
        "target name 'errors' is already used"),
    'missing src file': (
        '"bottleneck/config.py"]', '"bottleneck/confg.py"]', None,
        "lists 'bottleneck/confg.py' in srcs, but there is no such file"),
    'undefined dep': (
        '":config", ":conftest"', '":configs", ":conftest"', None,
        "depends on ':configs', which BUILD does not define"),
    'new test file': (
        '', '', {'tests/test_new.py': 'import pytest\n'},
        'tests/test_new.py is in no target\'s srcs; add a py_test(name = '
        '"test_new"'),
    'test file in a py_library': (
        'py_test(\n    name = "test_config"',
        'py_library(\n    name = "test_config"', None,
        'tests/test_config.py is a test file but no py_test has it'),
    'missing bottleneck dep': (
        'deps = [":bottleneck", ":errors"]', 'deps = [":bottleneck"]', None,
        'bottleneck/config.py:3: `from bottleneck import errors` needs '
        '":errors" in the deps of py_library \'config\''),
    'missing pip marker': (
        'deps = [":config", ":conftest", ":expect_pytest_installed"]',
        'deps = [":config", ":conftest"]', None,
        '`import pytest` needs ":expect_pytest_installed" in the deps of '
        'py_test \'test_config\''),
    'unknown pip package': (
        '', '', {'bottleneck/errors.py': 'import yaml\n'},
        "imports 'yaml', which is not in the repository"),
    'missing conftest dep': (
        '":config", ":conftest",', '":config",', None,
        'runs with tests/conftest.py; add ":conftest" to its deps'),
    'module target not named after the module': (
        'name = "config"', 'name = "config_lib"', None,
        "its py_library must be named 'config'"),
    'dependency cycle': (
        'deps = [":bottleneck"],', 'deps = [":bottleneck", ":config"],', None,
        'dependency cycle: :config -> :errors -> :config'),
    'non-literal srcs': (
        'srcs = ["bottleneck/errors.py"]', 'srcs = glob(["bottleneck/e*"])',
        None, '`srcs` must be a literal'),
}


@pytest.mark.parametrize('case', sorted(BROKEN_CASES))
def test_checker_reports_a_broken_build(tmp_path, case):
  old, new, extra_files, expected = BROKEN_CASES[case]
  assert old in GOOD_BUILD, f'case {case!r} no longer matches GOOD_BUILD'
  write_repo(str(tmp_path), GOOD_BUILD.replace(old, new, 1), extra_files)
  problems = check_build(str(tmp_path))
  assert any(expected in p for p in problems), problems



def test_ci_runs_the_readme_test_command():
  """.ci/run must run exactly the test command that README.md gives."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  commands = [line for line in readme.splitlines()
              if line.startswith('python3 -m venv') and 'pytest' in line]
  assert len(commands) == 1, 'README.md must give one test command line.'
  with open(os.path.join(ROOT, '.ci', 'run'), encoding='utf-8') as f:
    assert commands[0] in f.read().splitlines(), (
        f'.ci/run does not run the README test command: {commands[0]}')


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
