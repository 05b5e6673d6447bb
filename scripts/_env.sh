# Shared by scripts/test and scripts/demo: the project's virtualenv, with everything installed.
venv="${MEMORY_HYGIENE_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
export PATH="$PWD/$venv/bin:$PATH"
