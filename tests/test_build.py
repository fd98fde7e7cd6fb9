"""Keeps BUILD in step with the code, and bottleneck/ imports pointing down.

BUILD is Starlark, which for this file is Python syntax (calls with keyword
arguments), so `ast` parses it. `check_build` returns every problem as a message
that names the file or target and says what to fix; the tests below run it on
the repository and, to show that it can fail, on small broken copies.
"""

import ast
import collections
import glob
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The files that must be in some target's srcs (bench/ may not exist).
SOURCE_GLOBS = ('retrain.py', 'label_image.py', 'bottleneck/**/*.py',
                'tests/**/*.py', 'bench/**/*.py')

# Top-level name of an imported pip package -> its marker target in BUILD.
PIP_MARKERS = {
    'absl': ':expect_absl_installed',
    'apache_beam': ':expect_apache_beam_installed',  # requirements-beam.txt.
    'ai_edge_litert': ':expect_ai_edge_litert_installed',
    'google': ':expect_tensorflow_installed',  # protobuf, installed with it.
    'h5py': ':expect_h5py_installed',
    'keras': ':expect_tensorflow_installed',  # Installed with tensorflow.
    'numpy': ':expect_numpy_installed',
    'PIL': ':expect_pil_installed',
    'pytest': ':expect_pytest_installed',
    'tensorflow': ':expect_tensorflow_installed',
    'tensorflow_hub': ':expect_tensorflow_hub_installed',
}

# One rule call in BUILD; line is where it starts.
Target = collections.namedtuple('Target', 'kind name srcs deps line')


def parse_build(text):
  """Reads the targets of a BUILD file: its top-level calls with a `name`.

  Args:
    text: the BUILD file's contents; name, srcs and deps must be literals.

  Returns:
    a list of Target.
  """
  targets = []
  for statement in ast.parse(text, 'BUILD').body:
    call = statement.value if isinstance(statement, ast.Expr) else None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
      continue
    args = {k.arg: k.value for k in call.keywords}
    if 'name' not in args:
      continue  # package(), load(): not targets.
    values = [ast.literal_eval(args.get(key, ast.List(elts=[])))
              for key in ('name', 'srcs', 'deps')]
    targets.append(Target(call.func.id, *values, call.lineno))
  return targets


def read_imports(root, path):
  """Returns (line, module) for each import in root/path, at any depth.

  `from a import b` gives the module 'a.b'.
  """
  with open(os.path.join(root, path), encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  imports = []
  for node in ast.walk(tree):  # The code has no relative imports.
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      prefix = f'{node.module}.' if isinstance(node, ast.ImportFrom) else ''
      imports += [(node.lineno, prefix + alias.name) for alias in node.names]
  return imports


def module_file(root, importer, module):
  """Returns the repository file that defines module, or None.

  pytest.ini puts the root on the path, and pytest a test's own folder, so
  `import conftest` in tests/ means tests/conftest.py. In `from a import b`, b
  is a module (a/b.py) or a name in a (a/__init__.py).
  """
  parts = module.split('.')
  for n in range(len(parts), 0, -1):
    for folder in ('', os.path.dirname(importer)):
      stem = os.path.join(folder, *parts[:n])
      for path in (stem + '.py', os.path.join(stem, '__init__.py')):
        if os.path.isfile(os.path.join(root, path)):
          return path
  return None


def check_build(root):
  """Checks root/BUILD against the Python files under root.

  Args:
    root: the repository root.

  Returns:
    a list of messages, empty when BUILD is in step with the code.
  """
  with open(os.path.join(root, 'BUILD'), encoding='utf-8') as f:
    targets = parse_build(f.read())
  problems = []
  by_name = {t.name: t for t in reversed(targets)}  # The first one wins.
  owners = {}  # file -> the targets with it in srcs.
  for t in targets:
    if by_name[t.name] is not t:
      problems.append(f'BUILD:{t.line}: target name {t.name!r} is already '
                      f'used at line {by_name[t.name].line}; rename one.')
    for src in t.srcs:
      owners.setdefault(src, []).append(t)
      if not os.path.isfile(os.path.join(root, src)):
        problems.append(f'BUILD:{t.line}: {t.kind} {t.name!r} lists {src!r} '
                        'in srcs, but there is no such file; fix the path.')
    for dep in t.deps:
      if dep.startswith(':') and dep[1:] not in by_name:
        problems.append(f'BUILD:{t.line}: {t.kind} {t.name!r} depends on '
                        f'{dep!r}, which BUILD does not define; add a target '
                        f'named {dep[1:]!r} or remove the dep.')

  files = {path for pattern in SOURCE_GLOBS
           for path in glob.glob(pattern, root_dir=root, recursive=True)}
  for path in sorted(files):
    name = os.path.splitext(os.path.basename(path))[0]
    rule = f'(name = "{name}", srcs = ["{path}"], ...)'
    kinds = {t.kind for t in owners.get(path, [])}
    if path.startswith('tests/test_') and 'py_test' not in kinds:
      problems.append(f'{path} is a test file but no py_test has it in srcs; '
                      f'add a py_test{rule} to BUILD.')
    elif not kinds:
      problems.append(f'{path} is in no target\'s srcs; add a py_library{rule}'
                      ' to BUILD, with the deps its imports need.')

  for t in targets:
    deps = set(t.deps)
    for dep in t.deps:  # A py_binary gets the deps of its *_main library.
      lib = by_name.get(dep[1:])
      if t.kind == 'py_binary' and lib and lib.srcs == t.srcs:
        deps |= set(lib.deps)
    for src in t.srcs:
      if src.endswith('.py') and os.path.isfile(os.path.join(root, src)):
        problems += check_imports(root, src, t, deps, owners)
  return problems


def check_imports(root, src, target, deps, owners):
  """Lists the imports in src, one of target's srcs, that lack a dep."""
  problems = []
  for line, module in read_imports(root, src):
    path = module_file(root, src, module)
    top = module.split('.')[0]
    if path:  # Any target that owns the file will do.
      labels = [':' + t.name for t in owners.get(path, [])]
      if path in target.srcs or not labels:  # No labels: reported above.
        continue
    elif top in sys.stdlib_module_names:
      continue
    elif top in PIP_MARKERS:
      labels = [PIP_MARKERS[top]]
    else:
      problems.append(f'{src}:{line}: add {top!r} to requirements.txt, its '
                      'marker to BUILD, to PIP_MARKERS in tests/test_build.py '
                      f'and to the deps of {target.name!r}.')
      continue
    if not deps.intersection(labels):
      problems.append(f'{src}:{line}: importing {module!r} needs '
                      f'"{labels[0]}" in the deps of {target.kind} '
                      f'{target.name!r} (BUILD:{target.line}); add it.')
  return problems


def test_build_file_matches_the_code():
  problems = check_build(ROOT)
  assert not problems, (
      'BUILD is out of step with the code:\n  ' + '\n  '.join(problems))


# A small repository for the negative tests: GOOD_BUILD is correct for it, and
# each case of BROKEN_CASES breaks one thing.
SMALL_REPO = {
    'bottleneck/errors.py': 'import os\n',
    'bottleneck/config.py': 'from bottleneck import errors\n',
    'retrain.py': 'from bottleneck import config\n',
    'tests/test_config.py': 'import pytest\nfrom bottleneck import config\n',
}

GOOD_BUILD = """
py_library(name = "expect_pytest_installed")
py_library(name = "errors", srcs = ["bottleneck/errors.py"])
py_library(name = "config", srcs = ["bottleneck/config.py"], deps = [":errors"])
py_library(name = "retrain_main", srcs = ["retrain.py"], deps = [":config"])
py_binary(name = "retrain", srcs = ["retrain.py"], deps = [":retrain_main"])
py_test(name = "test_config", srcs = ["tests/test_config.py"],
        deps = [":config", ":expect_pytest_installed"])
"""

# Case -> (a text of GOOD_BUILD, its replacement, a part of the message).
BROKEN_CASES = {
    'file without target': (
        'py_library(name = "errors", srcs = ["bottleneck/errors.py"])', '',
        'add a py_library(name = "errors", srcs = ["bottleneck/errors.py"]'),
    'missing src': ('"bottleneck/errors.py"', '"errors.py"',
                    "lists 'errors.py' in srcs, but there is no such file"),
    'undefined dep': ('[":retrain_main"]', '[":main"]',
                      "depends on ':main', which BUILD does not define"),
    'missing module dep': ('deps = [":errors"]', 'deps = []',
                           'needs ":errors" in the deps of py_library'),
    'missing pip marker': ('":config", ":expect_pytest_installed"', '":config"',
                           'needs ":expect_pytest_installed" in the deps'),
    'duplicate name': ('name = "config"', 'name = "errors"',
                       "target name 'errors' is already used at line 3"),
    'test file not in a py_test': ('py_test(', 'py_library(',
                                   'add a py_test(name = "test_config"'),
}


def write_repo(root, build):
  """Writes SMALL_REPO and build (as BUILD) under root, a pathlib.Path."""
  for path, text in {**SMALL_REPO, 'BUILD': build}.items():
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text, encoding='utf-8')


def test_checker_accepts_a_correct_small_repo(tmp_path):
  write_repo(tmp_path, GOOD_BUILD)
  assert check_build(tmp_path) == []


@pytest.mark.parametrize('case', sorted(BROKEN_CASES))
def test_checker_reports_a_broken_build(tmp_path, case):
  old, new, expected = BROKEN_CASES[case]
  assert old in GOOD_BUILD, f'case {case!r} no longer matches GOOD_BUILD'
  write_repo(tmp_path, GOOD_BUILD.replace(old, new, 1))
  problems = check_build(tmp_path)
  assert any(expected in problem for problem in problems), problems


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


# Imports in bottleneck/ point only down the pipeline. The stages, in the order
# data flows through them (see bottleneck/__init__.py): the shared base modules,
# data, features, train, export, predict, run. A module may import modules of
# its own stage or of earlier ones, never of later ones, so that each stage can
# be read and tested knowing only what comes before it.

# Rank of each stage; the base modules are shared by every stage.
STAGES = ('base', 'data', 'features', 'train', 'export', 'predict', 'run')
BASE_MODULES = ('errors', 'config', 'publish', 'progress', '__init__')


def stage_of(path):
  """The stage of a file under bottleneck/, by its folder or name."""
  parts = path.split('/')
  if len(parts) > 2:
    return parts[1]
  name = os.path.splitext(parts[1])[0]
  return 'base' if name in BASE_MODULES else name


def upward_imports(root):
  """Lists 'file:line imports module (stage a -> stage b)' for each import
  that points up the pipeline; also files whose stage is not in STAGES."""
  problems = []
  for folder, _, files in os.walk(os.path.join(root, 'bottleneck')):
    for name in sorted(files):
      if not name.endswith('.py'):
        continue
      path = os.path.relpath(os.path.join(folder, name), root)
      stage = stage_of(path)
      if stage not in STAGES:
        problems.append(f'{path}: stage {stage!r} is not one of {STAGES}; '
                        'put the module in a stage subpackage.')
        continue
      for line, module in read_imports(root, path):
        parts = module.split('.')
        if parts[0] != 'bottleneck' or len(parts) < 2:
          continue
        target = ('bottleneck/' + '/'.join(parts[1:-1]) + '/' if len(parts) > 2
                  else 'bottleneck/') + parts[-1] + '.py'
        other = stage_of(target)
        if other in STAGES and STAGES.index(other) > STAGES.index(stage):
          problems.append(f'{path}:{line} imports {module} ({stage} -> '
                          f'{other}): a later stage; move the code down.')
  return problems


def test_imports_point_down_the_pipeline():
  problems = upward_imports(ROOT)
  assert not problems, '\n'.join(problems)


def test_an_upward_import_is_found(tmp_path):
  for rel, text in {
      'bottleneck/__init__.py': '',
      'bottleneck/errors.py': '',
      'bottleneck/data/images.py': 'from bottleneck import errors\n'
                                   'from bottleneck.run import pipeline\n',
      'bottleneck/run/pipeline.py': 'from bottleneck.data import images\n',
  }.items():
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(text)
  problems = upward_imports(str(tmp_path))
  assert len(problems) == 1 and 'bottleneck/data/images.py:2' in problems[0], (
      problems)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
