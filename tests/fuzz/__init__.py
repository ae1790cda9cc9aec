"""Hostile and careless input for every place untrusted text enters t2c, shared by the fuzz tests
(``tests/test_fuzz*.py``) and ``bench/fuzz.py``: the corpus, a tiny monitor and a populated world to
fuzz, a runner that invokes each CLI command in this process within a time bound (or as a real
process, for what may keep one from exiting), and the checks of what must hold for any input.

The properties (each ``Violation`` names the one it breaks):

* ``outcome``: exit 0, or a refusal: exit 2 (a usage or configuration error) or 1 (an OS error) whose
  output starts with a line naming the problem (``error: ...``, or click's usage message); never a
  traceback; a refusal prints at most 20 kB.
* ``markup``: a rich ``MarkupError`` anywhere (text from outside read as markup).
* ``hang`` and ``memory``: no input runs past its time bound or grows the process past 2 GB.
* ``database``: a refused command (non-zero exit) changes no row of any table (audits recorded as
  failed, which the product keeps on purpose, excepted).
* ``html``: every HTML page holds untrusted text only as text: no element, attribute or script that
  injected markup made (the ``t2cinj`` markers tell injected markup from our own).
* ``terminal``: untrusted text is printed as written: rich markup (``[bold]t2cmk1[/bold]``) and emoji
  codes (``grass:+1``) literally, and no raw ESC, CR or other control character, and no forged line
  (``t2cfrg``) at the start of an output line.
* ``secret``: no planted credential (``t2csecret``) is printed or written anywhere.

The modules, each named for what it does (none imports a module listed after it):

* ``corpus``: the hostile strings and their markers, and files that hypothesis will not write by itself;
* ``tiny_monitor``: a tiny but real monitor, its images and its monitors document;
* ``runner``: running a command in this process within a time bound, or as a real, bounded process;
* ``checks``: the properties above, ``Violation`` and the scans of output, pages, files and tables;
* ``world``: the world fuzzed (``FuzzWorld``), populated through the CLI;
* ``strategies``: hypothesis strategies of every argument kind and every file format;
* ``commands``: every leaf command of the CLI with a strategy of its arguments;
* ``readers``: the library's readers and parsers called directly;
* ``session``: a fuzzing session (``Fuzzer``) that runs cases, checks them and keeps the figures;
* ``corpus_cases``: the corpus run through the CLI (hostile files, special files, credential URLs).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
