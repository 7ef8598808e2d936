"""Static checks of the Slicer extension's packaging: CMake lists, .ui files, parameter nodes, icons.

Nothing here needs Slicer or slicer-core: files are parsed as text, XML and Python ASTs.
The last test configures the extension with CMake against a stub of Slicer's CMake API
(skipped without cmake) to check where the files land.
"""

import ast
import json
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
MODULES = ("BoneMorphometry", "FocalDefect", "BoneSR", "SyntheticCT")
SHARED_LIB = "BoneKitLib"
FORBIDDEN_IN_LIBS = ("qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper")
CITATIONS = {
    "BoneMorphometry": ("Jin et al. 2021", "Löffler et al. 2020", "Li et al. 2022"),
    "FocalDefect": ("Li et al. 2022",),
    "BoneSR": ("Jin et al. 2021", "pix2pixHD"),
    "SyntheticCT": ("Zanier et al. 2024", "TomoRay", "X2CT-GAN"),
}


# ----------------------------------------------------------------------------- helpers
def cmakeText(folder: Path) -> str:
    """CMakeLists.txt of ``folder`` without comments."""
    return re.sub(r"#[^\n]*", "", (folder / "CMakeLists.txt").read_text())


def cmakeVariables(text: str) -> dict[str, list[str]]:
    """``set(NAME values...)`` assignments, with ``${NAME}`` expanded in order."""
    variables: dict[str, list[str]] = {}
    for name, body in re.findall(r"\bset\(\s*(\w+)([^)]*)\)", text):
        values = []
        for token in body.split():
            expanded = re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [])), token)
            values.extend(expanded.split())
        variables[name] = values
    return variables


def macroArguments(text: str, macro: str) -> list[list[str]]:
    """Argument tokens of every call of ``macro``."""
    return [body.split() for body in re.findall(rf"\b{macro}\(([^)]*)\)", text)]


def moduleCall(folder: Path) -> dict[str, list[str]]:
    """The slicerMacroBuildScriptedModule keyword arguments, variables expanded."""
    text = cmakeText(folder)
    variables = cmakeVariables(text)
    [tokens] = macroArguments(text, "slicerMacroBuildScriptedModule")
    arguments: dict[str, list[str]] = {}
    keyword = None
    for token in tokens:
        if token in ("NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"):
            keyword = token
            arguments.setdefault(keyword, [])
            continue
        names = re.fullmatch(r"\$\{(\w+)\}", token)
        arguments[keyword].extend(variables[names.group(1)] if names else [token])
    return arguments


def pythonFiles(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def uiTree(module: str) -> ET.ElementTree:
    return ET.parse(REPOSITORY / module / "Resources" / "UI" / f"{module}.ui")


def uiWidgetNames(module: str) -> set[str]:
    return {w.get("name") for w in uiTree(module).iter("widget")}


def uiParameterNames(module: str) -> set[str]:
    return {p.findtext("string") for p in uiTree(module).iter("property") if p.get("name") == "SlicerParameterName"}


def moduleAst(module: str) -> ast.Module:
    return ast.parse((REPOSITORY / module / f"{module}.py").read_text())


def classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def selfUiNames(tree: ast.AST) -> set[str]:
    """Every X in ``self.ui.X``."""
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def parameterNodeFields(module: str) -> set[str]:
    """Annotated fields of the class decorated with @parameterNodeWrapper."""
    wrapped = [c for c in classes(moduleAst(module)).values()
               if any(getattr(d, "id", None) == "parameterNodeWrapper" for d in c.decorator_list)]
    assert len(wrapped) == 1, f"{module}.py needs exactly one @parameterNodeWrapper class"
    return {s.target.id for s in wrapped[0].body if isinstance(s, ast.AnnAssign)}


def classAttribute(cls: ast.ClassDef, name: str):
    for statement in cls.body:
        if isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == name for t in statement.targets):
            return ast.literal_eval(statement.value)
    return None


# ----------------------------------------------------------------------------- CMake lists
@pytest.mark.parametrize("folder", (SHARED_LIB, *MODULES))
def test_every_python_file_is_listed_and_every_listed_file_exists(folder):
    arguments = moduleCall(REPOSITORY / folder)
    assert arguments["NAME"] == [folder]
    assert set(arguments["SCRIPTS"]) == pythonFiles(REPOSITORY / folder)


@pytest.mark.parametrize("module", MODULES)
def test_module_resources_tests_and_naming(module):
    folder = REPOSITORY / module
    arguments = moduleCall(folder)
    assert sorted(arguments["RESOURCES"]) == [f"Resources/Icons/{module}.png", f"Resources/UI/{module}.ui"]
    assert all((folder / resource).is_file() for resource in arguments["RESOURCES"])
    assert "WITH_GENERIC_TESTS" in arguments
    text = cmakeText(folder)
    testing = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", text, re.S)
    unittest = r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)"
    assert testing and re.search(unittest, testing.group(1))
    assert {"Lib/__init__.py", "Lib/Logic.py"} <= {s.removeprefix(module) for s in arguments["SCRIPTS"]}


def test_shared_lib_ships_the_core_package():
    text = cmakeText(REPOSITORY / SHARED_LIB)
    assert not (REPOSITORY / SHARED_LIB / f"{SHARED_LIB}.py").exists(), "BoneKitLib must stay a hidden module"
    assert re.search(r"file\(GLOB_RECURSE\s+(\w+)\s+RELATIVE\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\.", text)
    assert "${CMAKE_CURRENT_SOURCE_DIR}/../bonekit/*.py" in text
    assert "${BONEKIT_CORE_SCRIPTS}" in " ".join(macroArguments(text, "slicerMacroBuildScriptedModule")[0])


def test_top_level_cmake_lists():
    raw = (REPOSITORY / "CMakeLists.txt").read_text()
    text = cmakeText(REPOSITORY)
    assert "cmake_minimum_required(VERSION 3.16.3...3.19.7 FATAL_ERROR)" in text
    assert re.search(r"\bproject\(BoneKit\)", text)
    variables = dict(re.findall(r'\bset\((EXTENSION_\w+)\s+"?([^")]*)"?\)', text))
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS",
                "README_FILE", "LICENSE_FILE"):
        assert variables.get(f"EXTENSION_{key}"), f"EXTENSION_{key} is not set"
    assert variables["EXTENSION_CATEGORY"] == "Quantification"
    assert variables["EXTENSION_DEPENDS"] == "PyTorch"
    for key, name in (("README_FILE", "README.md"), ("LICENSE_FILE", "LICENSE")):
        assert variables[f"EXTENSION_{key}"] == f"${{CMAKE_CURRENT_SOURCE_DIR}}/{name}"
        assert (REPOSITORY / name).is_file()
    assert raw.index("option(BUILD_TESTING") < raw.index("find_package(Slicer REQUIRED)")
    assert raw.index("include(${Slicer_USE_FILE})") < raw.index("add_subdirectory(")
    folders = {p.parent.name for p in REPOSITORY.glob("*/CMakeLists.txt")}
    subdirectories = [args[0] for args in macroArguments(text, "add_subdirectory")]
    assert sorted(subdirectories) == sorted(folders) == sorted((SHARED_LIB, *MODULES))
    assert subdirectories[0] == SHARED_LIB
    assert raw.rindex("add_subdirectory(") < raw.index("include(${Slicer_EXTENSION_GENERATE_CONFIG})") \
        < raw.index("include(${Slicer_EXTENSION_CPACK})")


def test_catalogue_entry():
    entry = json.loads((REPOSITORY / "BoneKit.json").read_text())
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert set(entry) == {"$schema", "category", "scm_url", "scm_revision", "build_dependencies",
                          "build_subdirectory"}
    assert entry["category"] == "Quantification"
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["build_subdirectory"] == "."
    assert entry["scm_url"].startswith("https://github.com/") and entry["scm_revision"]


@pytest.mark.parametrize("path", ["BoneKit.png", *(f"{m}/Resources/Icons/{m}.png" for m in MODULES)])
def test_icons_are_128_pixel_pngs(path):
    header = (REPOSITORY / path).read_bytes()[:33]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind, width, height, depth, colorType = struct.unpack(">I4sIIBB", header[8:26])
    assert (kind, width, height) == (b"IHDR", 128, 128)
    assert depth == 8 and colorType in (2, 6)


# ----------------------------------------------------------------------------- .ui <-> .py
@pytest.mark.parametrize("module", MODULES)
def test_ui_widgets_used_by_the_widget_exist(module):
    shared = {}   # widget mixins of the shared library: name -> (self.ui names, base names)
    for file in ("gui.py", "cancellable.py"):
        for cls in classes(ast.parse((REPOSITORY / SHARED_LIB / SHARED_LIB / file).read_text())).values():
            shared[cls.name] = (selfUiNames(cls), [getattr(b, "id", None) for b in cls.bases])
    widget = classes(moduleAst(module))[f"{module}Widget"]
    used, bases = selfUiNames(moduleAst(module)), [getattr(b, "id", None) for b in widget.bases]
    while bases:
        names, more = shared.get(bases.pop(), (set(), []))
        used |= names
        bases += more
    assert {"applyButton", "progressBar"} <= used
    assert used <= uiWidgetNames(module)


@pytest.mark.parametrize("module", MODULES)
def test_ui_parameter_names_match_the_parameter_node(module):
    fields = parameterNodeFields(module)
    assert uiParameterNames(module) == fields
    widget = classes(moduleAst(module))[f"{module}Widget"]
    assert set(classAttribute(widget, "requiredParameters") or ()) <= fields
    assert set(classAttribute(widget, "defaultNodeClasses") or {}) <= fields


@pytest.mark.parametrize("module", MODULES)
def test_ui_is_a_slicer_module_panel(module):
    root = uiTree(module).getroot()
    top = root.find("widget")
    assert (root.findtext("class"), top.get("class"), top.get("name")) == (module, "qMRMLWidget", module)
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    assert widgets["applyButton"] == "QPushButton" and widgets["progressBar"] == "QProgressBar"
    assert "ctkCollapsibleButton" in widgets.values()
    combos = {name for name, cls in widgets.items() if cls == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)" and c.findtext("sender") == module}
    assert combos and connected == combos
    for combo in root.iter("widget"):
        if combo.get("class") == "qMRMLNodeComboBox":
            types = [s.text for p in combo.iter("property") if p.get("name") == "nodeTypes" for s in p.iter("string")]
            assert types and all(t.startswith("vtkMRML") for t in types)


# ----------------------------------------------------------------------------- module files
@pytest.mark.parametrize("module", MODULES)
def test_module_file_structure_and_metadata(module):
    tree = moduleAst(module)
    found = classes(tree)
    for suffix, base in (("", "ScriptedLoadableModule"), ("Widget", "ScriptedLoadableModuleWidget"),
                         ("Logic", "ScriptedLoadableModuleLogic"), ("Test", "ScriptedLoadableModuleTest")):
        assert base in {getattr(b, "id", None) for b in found[f"{module}{suffix}"].bases}
    assert f"{module}LibLogic" in {getattr(b, "id", None) for b in found[f"{module}Logic"].bases}
    metadata = {}
    for node in ast.walk(found[module]):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            metadata[node.targets[0].attr] = node.value
    for key in ("title", "helpText", "acknowledgementText"):
        call = metadata[key]
        assert isinstance(call, ast.Call) and call.func.id == "_", f"{key} must be wrapped in _()"
    assert ast.literal_eval(metadata["dependencies"]) == []
    assert "BoneKit" in ast.unparse(metadata["categories"])
    helpText = ast.literal_eval(metadata["helpText"].args[0])
    for citation in CITATIONS[module]:
        assert citation in helpText


@pytest.mark.parametrize("path", sorted(
    [p.relative_to(REPOSITORY).as_posix() for p in (REPOSITORY / SHARED_LIB / SHARED_LIB).glob("*.py")]
    + [p.relative_to(REPOSITORY).as_posix() for m in MODULES for p in (REPOSITORY / m / f"{m}Lib").glob("*.py")]))
def test_lib_packages_import_without_qt(path):
    imported = set()
    for node in ast.walk(ast.parse((REPOSITORY / path).read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported for bad in FORBIDDEN_IN_LIBS if name == bad or name.startswith(bad + ".")}


# ----------------------------------------------------------------------------- CMake configure
STUB_SLICER = r"""
# A stub of the Slicer CMake API the extension uses. Scripts and resources are copied at
# configure time with the destination rule of ctkMacroCompilePythonScript (CTK): a relative
# path P goes from the current source folder to <qt-scripted-modules>/P; an absolute path
# goes to <qt-scripted-modules>/<its path relative to CMAKE_CURRENT_BINARY_DIR>.
if(NOT DEFINED BUILD_TESTING)
  set(BUILD_TESTING ON)  # Slicer includes CTest, whose option defaults to ON
endif()
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/GenerateConfig.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/CPack.cmake)
"""

STUB_USE_SLICER = r"""
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords: ${MY_UNPARSED_ARGUMENTS}")
  endif()
  set(_destination ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
  foreach(_file IN LISTS MY_SCRIPTS MY_RESOURCES)
    if(IS_ABSOLUTE ${_file})
      set(_source ${_file})
      file(RELATIVE_PATH _target ${CMAKE_CURRENT_BINARY_DIR} ${_file})
    else()
      set(_source ${CMAKE_CURRENT_SOURCE_DIR}/${_file})
      set(_target ${_file})
    endif()
    if(NOT EXISTS ${_source})
      message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file '${_file}'")
    endif()
    configure_file(${_source} ${_destination}/${_target} COPYONLY)
  endforeach()
  file(APPEND ${CMAKE_BINARY_DIR}/modules.txt "${MY_NAME}\n")
endmacro()
macro(slicer_add_python_unittest)
  file(APPEND ${CMAKE_BINARY_DIR}/unittests.txt "${ARGN}\n")
endmacro()
"""

STUB_CPACK = r"""
foreach(_var EXTENSION_README_FILE EXTENSION_LICENSE_FILE)
  if(NOT EXISTS "${${_var}}")
    message(FATAL_ERROR "${_var} does not exist: '${${_var}}'")
  endif()
endforeach()
file(WRITE ${CMAKE_BINARY_DIR}/extension.txt "${PROJECT_NAME};${EXTENSION_DEPENDS};${EXTENSION_CATEGORY}")
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_configure_puts_modules_and_core_on_the_scripted_module_path(tmp_path):
    stub = tmp_path / "Slicer"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_SLICER)
    (stub / "UseSlicer.cmake").write_text(STUB_USE_SLICER)
    (stub / "GenerateConfig.cmake").write_text("")
    (stub / "CPack.cmake").write_text(STUB_CPACK)
    build = tmp_path / "build"
    result = subprocess.run(["cmake", "-S", str(REPOSITORY), "-B", str(build), f"-DSlicer_DIR={stub}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (build / "modules.txt").read_text().split() == [SHARED_LIB, *MODULES]
    assert not (build / "unittests.txt").exists(), "BUILD_TESTING must default to OFF"
    assert (build / "extension.txt").read_text() == "BoneKit;PyTorch;Quantification"

    libDir = build / "lib" / "Slicer-5.10"
    scripted = libDir / "qt-scripted-modules"
    shipped = {p.relative_to(scripted).as_posix() for p in scripted.rglob("*") if p.is_file()}
    assert {p.relative_to(REPOSITORY).as_posix() for p in (REPOSITORY / "bonekit").rglob("*.py")
            if "__pycache__" not in p.parts} <= shipped
    assert {f"{SHARED_LIB}/__init__.py", "BoneSR.py", "BoneSRLib/Logic.py", "Resources/UI/BoneSR.ui",
            "Resources/Icons/SyntheticCT.png"} <= shipped
    assert {p.parent for p in libDir.rglob("*") if p.is_file()} <= {scripted, *scripted.rglob("*")}

    probe = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(scripted)!r})
        try:
            import slicer
        except ModuleNotFoundError:
            sys.exit(3)
        import bonekit, BoneKitLib.volumes, FocalDefectLib
        print(bonekit.__file__)
        """)
    where = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if where.returncode == 3:
        pytest.skip("slicer-core is not installed: the shipped Lib packages cannot be imported")
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(scripted))
