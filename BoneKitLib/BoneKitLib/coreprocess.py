"""Running the core's command line in a separate process, as every deep-learning module does.

Inside Slicer the torch work runs in a child ``PythonSlicer -m bonekit ... --progress-lines`` process,
so that Slicer stays responsive, a crash of torch or CUDA cannot take the scene down, and the same
code runs outside Slicer. :class:`CoreProcessLogic` starts the child with the core package on its
path, forwards its ``PROGRESS <fraction> <message>`` lines to a progress callback (and calls it again
every :attr:`~CoreProcessLogic.pollInterval` s, so a GUI can process its events), raises the child's
``bonekit: error:`` line as a :class:`~bonekit.BoneKitError`, and :meth:`~CoreProcessLogic.cancel`
stops it. No qt imports.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

import slicer

from bonekit import BoneKitError

from .inputs import ProcessingCancelled, ProgressCallback, reportProgress

__all__ = ["CoreProcessLogic", "DEVICES", "FROM_FILE"]

#: Devices the network modules offer ("cuda:N" is accepted too).
DEVICES = ("auto", "cuda", "cpu")
#: The model choice that means "a model file the user picks" (a module's model list ends with it).
FROM_FILE = "From file..."

_PROGRESS = "PROGRESS "
_ERROR = "bonekit: error: "
_END = object()  # end of the child's output


class CoreProcessLogic:
    """Mixin of a module logic that runs ``bonekit`` commands in a child process.

    Subclasses set :attr:`processTitle` (used in messages, e.g. "super-resolution") and call
    :meth:`runCore` from their ``process``; :meth:`cancel` stops it.
    """

    #: What the child does, for messages ("the <title> process")
    processTitle = "BoneKit"
    #: Prefix of the log lines
    logName = "BoneKit"
    #: Seconds between two looks at the child process (and two calls of the progress callback).
    pollInterval = 0.1
    #: Seconds a cancelled child is given to end after SIGTERM before it is killed.
    terminateTimeout = 5.0
    #: Folder for the temporary folders (None: the system's temporary folder).
    temporaryDirectory: str | None = None
    #: Progress of the child's run is mapped onto this part of the callback's 0..1.
    childProgressRange = (0.05, 0.95)
    #: Kind of the shipped models the child runs (:data:`bonekit.models.KINDS`: "sr", "sct").
    modelKind: str | None = None
    #: What a model file of this module is, for messages.
    modelFileName = "model file (.pt)"
    #: Set by :meth:`cancel`, cleared when :meth:`process` starts (class defaults, so that no ``__init__``
    #: is needed alongside ``ScriptedLoadableModuleLogic``'s).
    _cancelRequested = False
    _process = None

    # ------------------------------------------------------------------ the child process
    @staticmethod
    def insideSlicerApplication() -> bool:
        """True in the Slicer application (``slicer.app`` is a real Slicer application object)."""
        app = getattr(slicer, "app", None)
        return app is not None and hasattr(app, "slicerHome")

    def pythonExecutable(self) -> str:
        """The Python that runs the core: Slicer's ``PythonSlicer`` launcher inside the Slicer application
        (it sets up Slicer's Python environment, where PyTorch is installed), else this interpreter."""
        if not self.insideSlicerApplication():
            return sys.executable
        found = (shutil.which("PythonSlicer", path=os.path.dirname(sys.executable))
                 or shutil.which("PythonSlicer"))
        if not found:
            raise BoneKitError("Slicer's PythonSlicer program was not found next to Slicer's Python "
                               f"({sys.executable}) nor on the PATH; reinstall Slicer.")
        return found

    def environment(self) -> dict[str, str]:
        """Environment of the child process: the core package's folder first on ``PYTHONPATH`` (inside
        Slicer the core ships in qt-scripted-modules, which PythonSlicer does not search), unbuffered
        UTF-8 output. Inside Slicer it starts from Slicer's start-up environment, as
        ``slicer.util.launchConsoleProcess`` does, so that PythonSlicer sets up its own."""
        import bonekit

        env = None
        if self.insideSlicerApplication():
            try:
                env = dict(slicer.util.startupEnvironment())
            except Exception:  # an older Slicer without it: the application's environment
                env = None
        env = dict(os.environ) if env is None else env
        root = str(Path(bonekit.__file__).resolve().parent.parent)
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        return env

    # ------------------------------------------------------------------ models and devices
    def models(self) -> list[dict]:
        """The catalogue of shipped models of :attr:`modelKind` (``bonekit.models``): one dict per model with
        ``name``, ``file``, ``sha256``, ``card``, ``description`` ...; the first one is "demo"."""
        from bonekit import models

        return [dict(entry) for entry in models.catalogue(self.modelKind)]

    @staticmethod
    def modelLabel(entry: dict) -> str:
        """One line naming a catalogue entry (modules add what matters for choosing it)."""
        return str(entry.get("name", "?"))

    def _noModel(self, model) -> bool:
        return model is None or str(model).strip() in ("", ".", FROM_FILE)

    def resolveModel(self, nameOrPath) -> Path:
        """The model file of a catalogue name ("demo" = the first entry) or a path; a catalogue file is
        checked against its SHA-256. Raises a :class:`BoneKitError` naming what is missing."""
        from bonekit import models

        if self._noModel(nameOrPath):
            raise BoneKitError(f"No model chosen: pick a model of the catalogue, or a {self.modelFileName}.")
        return models.resolve_model(str(nameOrPath).strip(), self.modelKind)

    def modelArgument(self, model) -> str:
        """``model`` for the child's ``--model``: a catalogue name as it is, a file made absolute."""
        if self._noModel(model):
            raise BoneKitError(f"No model chosen: pick a model of the catalogue, or a {self.modelFileName}.")
        model = str(model).strip()
        return str(Path(model).expanduser().resolve()) if Path(model).expanduser().exists() else model

    @staticmethod
    def deviceArgument(device) -> str:
        """``device`` for the child's ``--device``: auto, cuda, cuda:N or cpu (checked)."""
        device = str(device or "auto").strip().lower()
        if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise BoneKitError(f"Unknown device '{device}': choose {', '.join(DEVICES)} (or cuda:N).")
        return device

    # ------------------------------------------------------------------ progress and cancel
    def cancel(self) -> None:
        """Stop a running :meth:`process`: the child process is terminated (killed if it does not end
        within :attr:`terminateTimeout` s) and :meth:`process` raises :class:`ProcessingCancelled`,
        having written nothing. Safe to call from another thread, or when nothing runs."""
        self._cancelRequested = True
        process = self._process
        if process is not None and process.poll() is None:
            try:
                process.terminate()
            except OSError:  # it ended meanwhile
                pass

    @property
    def cancelRequested(self) -> bool:
        return self._cancelRequested

    @property
    def running(self) -> bool:
        """True while a child process runs."""
        return self._process is not None and self._process.poll() is None

    def _checkCancel(self) -> None:
        if self._cancelRequested:
            raise ProcessingCancelled(f"The {self.processTitle} run was cancelled; nothing was written.")

    def _stopProcess(self, process) -> None:
        """Terminate the child, then kill it if it does not end in time; always reap it."""
        if process.poll() is None:
            try:
                process.terminate()
                process.wait(timeout=self.terminateTimeout)
            except subprocess.TimeoutExpired:
                logging.warning("%s: the %s process did not end after %g s; killing it.", self.logName,
                                self.processTitle, self.terminateTimeout)
                process.kill()
            except OSError:
                pass
        process.wait()

    # ------------------------------------------------------------------ running
    def startRun(self, progressCallback: ProgressCallback | None):
        """Begin a run: refuse a second one, clear the cancel flag, and return ``(report, state)``.

        ``report(fraction, message)`` forwards monotonic progress to ``progressCallback`` and raises
        :class:`ProcessingCancelled` once :meth:`cancel` was called; ``state`` holds the last report.
        """
        if self._process is not None:
            raise BoneKitError(f"A {self.processTitle} run is already in progress; wait for it or cancel it.")
        self._cancelRequested = False
        state = {"fraction": 0.0, "message": "Checking the inputs"}

        def report(fraction: float, message: str) -> None:
            self._checkCancel()
            state["fraction"], state["message"] = max(state["fraction"], float(fraction)), message
            reportProgress(progressCallback, state["fraction"], message)
            self._checkCancel()

        report(0.0, "Checking the inputs")
        return report, state

    def runCore(self, arguments: Sequence[str], folder: Path, report, state: dict) -> None:
        """Run the child, forward its progress, raise its error; the child never outlives this call."""
        start, stop = self.childProgressRange
        report(start, f"Starting the {self.processTitle} process (loading PyTorch and the model)")
        logging.info("%s: running %s", self.logName, " ".join(arguments))
        try:
            process = subprocess.Popen(arguments, cwd=str(folder), env=self.environment(), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       encoding="utf-8", errors="replace", bufsize=1)
        except OSError as error:
            raise BoneKitError(f"Could not start the {self.processTitle} process ({arguments[0]}): {error}.") from None
        self._process = process
        lines: queue.Queue = queue.Queue()

        def read() -> None:  # a thread, so that the loop below can poll (GUI events, cancel) while the child is quiet
            try:
                for line in process.stdout:
                    lines.put(line)
            except (OSError, ValueError):  # the pipe was closed under it: the run is over anyway
                pass
            finally:
                lines.put(_END)

        reader = threading.Thread(target=read, name=f"{self.logName} output reader", daemon=True)
        reader.start()
        output: list[str] = []
        error = None
        try:
            while True:
                try:
                    line = lines.get(timeout=self.pollInterval)
                except queue.Empty:
                    report(state["fraction"], state["message"])  # let a GUI process its events
                    continue
                if line is _END:
                    break
                line = line.rstrip("\r\n")
                if line.startswith(_PROGRESS):
                    fraction, _, message = line[len(_PROGRESS):].partition(" ")
                    try:
                        value = min(1.0, max(0.0, float(fraction)))
                    except ValueError:
                        value = 0.0
                    report(start + (stop - start) * value, message)
                    continue
                if line.startswith(_ERROR):
                    error = line[len(_ERROR):]
                if line.strip():
                    output.append(line)
                    logging.info("%s: %s", self.logName, line)
                self._checkCancel()
            self._checkCancel()
            code = process.wait()
            self._checkCancel()
        finally:
            self._stopProcess(process)
            self._process = None
            reader.join(timeout=self.terminateTimeout)
            process.stdout.close()
        if code != 0:
            if error is None:
                tail = output[-1] if output else "no message"
                error = (f"The {self.processTitle} process failed (exit code {code}): {tail}. See the application "
                         "log for its full output.")
            raise BoneKitError(error)
