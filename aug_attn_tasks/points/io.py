"""Readers for point cloud and mesh files, and area-weighted surface sampling.

Formats: OFF and its ``[ST][C][N]OFF`` variants (with the quirks of the real ModelNet files), PLY
(ascii, binary little/big endian, with or without normals and faces), OBJ (``v``/``vn``/``f``), STL
(ascii and binary), TXT (comma or whitespace separated) and NPY. Pure numpy; every error names the
offending file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "Geometry",
    "POINT_SUFFIXES",
    "load_point_cloud",
    "read_npy",
    "read_obj",
    "read_off",
    "read_ply",
    "read_stl",
    "read_txt",
    "sample_surface",
    "triangulate_fans",
]

POINT_SUFFIXES = (".txt", ".npy", ".ply", ".off", ".obj", ".stl")


class Geometry(NamedTuple):
    """What a file holds: ``pos (V, 3)``, ``normal (V, 3)`` or None, ``faces (F, 3)`` int64 or None."""

    pos: np.ndarray
    normal: np.ndarray | None
    faces: np.ndarray | None


def triangulate_fans(polygons: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Split polygons ``(v0, v1, ..., vk)`` into fan triangles ``(v0, vi, vi+1)``; returns ``(F, 3)`` int64.

    ``polygons`` is an ``(P, k)`` array (all polygons of one size) or a list of 1-D index arrays.
    """
    groups: dict[int, list[np.ndarray]] = {}
    if isinstance(polygons, np.ndarray):
        groups[polygons.shape[1]] = [polygons]
    else:
        for poly in polygons:
            groups.setdefault(len(poly), []).append(poly)
    triangles = [np.zeros((0, 3), dtype=np.int64)]
    for size, polys in groups.items():
        stacked = np.asarray(np.vstack(polys), dtype=np.int64).reshape(-1, size)  # (P, k)
        for i in range(1, size - 1):
            triangles.append(stacked[:, [0, i, i + 1]])
    return np.concatenate(triangles)


def _check_faces(path: Path, faces: np.ndarray, num_vertices: int) -> None:
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ValueError(f"{path}: face vertex index out of range [0, {num_vertices})")


def _off_face(line: str) -> np.ndarray:
    """``n i_1 .. i_n [colour ...]`` -> ``[n, i_1, .., i_n]`` (colours, int or float, are dropped)."""
    tokens = line.split()
    count = int(tokens[0])
    if count < 3 or len(tokens) < 1 + count:
        raise ValueError(f"face line {line.strip()!r}: a face needs at least 3 vertex indices, as many as its first number says")
    return np.array(tokens[: 1 + count], dtype=np.int64)


# Geomview's OFF header keyword: [ST][C][N][4][n]OFF. ST (texture coordinates) and C (colours) only
# add columns after x y z [nx ny nz]; 4 (homogeneous coordinates) and n (any dimension) change what
# a vertex is, so they are refused rather than misread.
_OFF_HEADER = re.compile(r"(ST)?(C)?(N)?(4)?(n)?OFF(?![A-Za-z])")


def _off_header(path: Path, line: str) -> tuple[bool, str]:
    """Whether vertices carry normals (``N``), and the rest of the header line (fused counts)."""
    match = _OFF_HEADER.match(line)
    if match is None:
        raise ValueError(f"{path}: not an OFF file (header {line.split()[0]!r} is not [ST][C][N]OFF)")
    keyword = match.group(0)
    if match.group(4) or match.group(5):
        raise ValueError(
            f"{path}: unsupported OFF variant {keyword!r} (header {line!r}): homogeneous (4OFF) and "
            "n-dimensional (nOFF) vertices are not read; supported: OFF, COFF, NOFF, CNOFF, STOFF and combinations"
        )
    rest = line[match.end() :].strip()
    if rest.split()[:1] == ["BINARY"]:
        raise ValueError(f"{path}: binary OFF (header {line!r}) is not supported; convert it to ascii OFF or PLY")
    return bool(match.group(3)), rest


def read_off(path: str | Path) -> Geometry:
    """Read an OFF mesh; returns vertices ``(V, 3)`` float64, vertex normals ``(V, 3)`` (``NOFF``,
    ``CNOFF``...) or None, and fan-triangulated faces ``(F, 3)``.

    Accepts the ``[ST][C][N]OFF`` variants (colour and texture columns are dropped) and the quirks of
    the ModelNet files: the header fused with the counts (``OFF490 518 0``), ``#`` comments, blank
    lines, polygons with more than three vertices and trailing colour values. ``4OFF``, ``nOFF`` and
    binary OFF are refused with a message naming the file and its header.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="strict")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read OFF file ({err})") from err
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{path}: not an OFF file (no header)")
    with_normals, rest = _off_header(path, lines[0])
    counts = rest.split()
    body = lines[1:]
    if not counts:  # the usual layout: counts on their own line
        if not body:
            raise ValueError(f"{path}: OFF header has no vertex/face counts")
        counts, body = body[0].split(), body[1:]
    try:
        num_vertices, num_faces = int(counts[0]), int(counts[1])
    except (ValueError, IndexError) as err:
        raise ValueError(f"{path}: bad OFF counts line {counts!r}") from err
    if len(body) < num_vertices + num_faces:
        raise ValueError(
            f"{path}: OFF declares {num_vertices} vertices and {num_faces} faces, "
            f"but has only {len(body)} data lines"
        )
    columns = 6 if with_normals else 3
    try:
        table = np.array([line.split()[:columns] for line in body[:num_vertices]], dtype=np.float64)
        polygons = [_off_face(line) for line in body[num_vertices : num_vertices + num_faces]]
    except ValueError as err:
        raise ValueError(f"{path}: malformed OFF data ({err}; {lines[0].split()[0]} vertices need {columns} values)") from err
    table = table.reshape(num_vertices, columns) if num_vertices else np.zeros((0, columns))
    if any(poly[0] < 3 or len(poly) < 1 + poly[0] for poly in polygons):
        raise ValueError(f"{path}: OFF face with fewer than 3 vertices or fewer indices than declared")
    faces = triangulate_fans([poly[1 : 1 + poly[0]] for poly in polygons])
    _check_faces(path, faces, num_vertices)
    return Geometry(table[:, :3], table[:, 3:] if with_normals else None, faces)


def _obj_index(token: str, count: int) -> int:
    """An OBJ face corner ``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn`` -> 0-based vertex index (negative
    indices count back from the vertices read so far, as the format defines)."""
    index = int(token.split("/", 1)[0])
    return index - 1 if index > 0 else count + index


def read_obj(path: str | Path) -> Geometry:
    """Read a Wavefront OBJ: ``v x y z [w | r g b]``, ``vn``, ``f`` polygons (fan-triangulated).

    Vertex normals are returned only for a file without faces whose ``vn`` lines pair one-to-one
    with its ``v`` lines (a point cloud); meshes are sampled with face normals. Other statements
    (``vt``, ``o``, ``g``, ``usemtl``, ``l``...) are ignored.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="strict")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read OBJ file ({err})") from err
    vertices, normals, polygons = [], [], []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        try:
            if words[:1] == ["v"]:
                vertices.append([float(w) for w in words[1:4]])
            elif words[:1] == ["vn"]:
                normals.append([float(w) for w in words[1:4]])
            elif words[:1] == ["f"]:
                polygons.append(np.array([_obj_index(w, len(vertices)) for w in words[1:]], dtype=np.int64))
        except ValueError as err:
            raise ValueError(f"{path}:{number}: malformed OBJ line {line.strip()!r}") from err
        if words[:1] in (["v"], ["vn"]) and len((vertices if words[0] == "v" else normals)[-1]) != 3:
            raise ValueError(f"{path}:{number}: OBJ {words[0]} line needs 3 coordinates: {line.strip()!r}")
        if words[:1] == ["f"] and len(polygons[-1]) < 3:
            raise ValueError(f"{path}:{number}: OBJ face with fewer than 3 vertices")
    if not vertices:
        raise ValueError(f"{path}: OBJ file has no vertices")
    pos = np.array(vertices, dtype=np.float64)
    faces = triangulate_fans(polygons) if polygons else None
    if faces is not None:
        _check_faces(path, faces, len(pos))
    normal = np.array(normals, dtype=np.float64) if faces is None and len(normals) == len(pos) else None
    return Geometry(pos, normal, faces)


_STL_RECORD = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])  # 50 bytes


def read_stl(path: str | Path) -> Geometry:
    """Read an STL mesh, binary (80-byte header, ``uint32`` count, 50-byte triangles) or ascii
    (``solid ... facet normal ... vertex x y z ... endsolid``).

    Binary files whose header happens to start with ``solid`` are recognised by their exact size.
    Returns one vertex per triangle corner ``(3F, 3)`` (STL shares none) and faces ``(F, 3)``; the
    stored facet normals are not used (many writers leave them zero): sampling takes the winding's.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read STL file ({err})") from err
    count = int(np.frombuffer(raw, "<u4", 1, 80)[0]) if len(raw) >= 84 else -1
    if count >= 0 and len(raw) == 84 + _STL_RECORD.itemsize * count:
        corners = np.frombuffer(raw, _STL_RECORD, count, 84)["corners"].astype(np.float64)  # (F, 3, 3)
    elif raw.lstrip().startswith(b"solid"):
        words = raw.decode("ascii", errors="replace").split()
        at = [i for i, word in enumerate(words) if word == "vertex"]
        try:
            corners = np.array([words[i + 1 : i + 4] for i in at], dtype=np.float64)
        except ValueError as err:
            raise ValueError(f"{path}: malformed ascii STL vertex ({err})") from err
        if len(corners) % 3:
            raise ValueError(f"{path}: ascii STL has {len(corners)} vertices, not 3 per facet")
    else:
        expected = f"{84 + _STL_RECORD.itemsize * count} bytes for {count} triangles" if count >= 0 else "at least 84 bytes"
        raise ValueError(f"{path}: not an STL file (binary STL needs {expected}, got {len(raw)}; ascii starts with 'solid')")
    pos = corners.reshape(-1, 3)
    return Geometry(pos, None, np.arange(len(pos), dtype=np.int64).reshape(-1, 3))


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


class _PlyElement(NamedTuple):
    name: str
    count: int
    properties: list[tuple[str, str, str | None]]  # (name, value type, list count type or None)


def _parse_ply_header(path: Path, raw: bytes) -> tuple[str, list[_PlyElement], int]:
    """Returns the format, the elements and the byte offset of the body."""
    end = re.search(rb"end_header[ \t]*\r?\n", raw)
    if not raw.startswith(b"ply") or end is None:
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    fmt, elements = "", []
    for line in raw[: end.start()].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append(_PlyElement(words[1], int(words[2]), []))
            elif words[0] == "property" and words[1] == "list":
                elements[-1].properties.append((words[4], _PLY_TYPES[words[3]], _PLY_TYPES[words[2]]))
            elif words[0] == "property":
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]], None))
        except (IndexError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: bad PLY header line {line!r}") from err
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, end.end()


def _read_ply_binary(element: _PlyElement, raw: bytes, offset: int, order: str) -> tuple[dict, int]:
    """Decode one binary element starting at ``offset``; returns its columns and the next offset."""
    lists = [p for p in element.properties if p[2] is not None]
    if not lists:  # fixed-size records: one vectorised read
        dtype = np.dtype([(name, order + kind) for name, kind, _ in element.properties])
        data = np.frombuffer(raw, dtype=dtype, count=element.count, offset=offset)
        return {name: data[name] for name in dtype.names}, offset + dtype.itemsize * element.count
    # The smallest record (every list empty) bounds how many records the bytes left can hold: a header
    # declaring 10^9 faces in a 2 MB file is refused here, not after walking every record that fits.
    smallest = sum(np.dtype(count_kind or kind).itemsize for _, kind, count_kind in element.properties)
    if element.count * smallest > len(raw) - offset:
        raise ValueError(
            f"element {element.name!r} declares {element.count} records, the {len(raw) - offset} bytes left hold at most "
            f"{(len(raw) - offset) // smallest}"
        )
    columns: dict[str, list] = {name: [] for name, _, _ in element.properties}
    for _ in range(element.count):  # variable-size records (faces): walk them
        for name, kind, count_kind in element.properties:
            if count_kind is None:
                value = np.frombuffer(raw, order + kind, 1, offset)
                offset += value.itemsize
                columns[name].append(value[0])
            else:
                n = int(np.frombuffer(raw, order + count_kind, 1, offset)[0])
                offset += np.dtype(count_kind).itemsize
                columns[name].append(np.frombuffer(raw, order + kind, n, offset).astype(np.int64))
                offset += np.dtype(kind).itemsize * n
    return columns, offset


def _read_ply_ascii(element: _PlyElement, lines: list[str], start: int) -> tuple[dict, int]:
    """Decode one ascii element (one record per line) from ``lines[start:]``."""
    if len(lines) < start + element.count:
        raise ValueError(f"element {element.name!r} needs {element.count} lines, {len(lines) - start} left")
    columns: dict[str, list] = {name: [] for name, _, _ in element.properties}
    for line in lines[start : start + element.count]:
        values, i = line.split(), 0
        for name, _, count_kind in element.properties:
            if count_kind is None:
                columns[name].append(float(values[i]))
                i += 1
            else:
                n = int(values[i])
                columns[name].append(np.array(values[i + 1 : i + 1 + n], dtype=np.int64))
                i += 1 + n
    return columns, start + element.count


def read_ply(path: str | Path) -> Geometry:
    """Read a PLY file: vertex ``x, y, z`` (float64), optional ``nx, ny, nz`` and optional faces.

    Faces (``vertex_indices`` or ``vertex_index``) are fan-triangulated. Other elements are skipped.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read PLY file ({err})") from err
    fmt, elements, offset = _parse_ply_header(path, raw)
    order = "<" if fmt == "binary_little_endian" else ">"
    lines = raw[offset:].decode("ascii", errors="replace").splitlines() if fmt == "ascii" else []
    lines = [line for line in lines if line.strip()]
    decoded: dict[str, dict] = {}
    line_index = 0
    try:
        for element in elements:
            if fmt == "ascii":
                decoded[element.name], line_index = _read_ply_ascii(element, lines, line_index)
            else:
                decoded[element.name], offset = _read_ply_binary(element, raw, offset, order)
    except (ValueError, IndexError) as err:  # truncated body or bad numbers
        raise ValueError(f"{path}: malformed or truncated PLY body ({err})") from err
    vertex = decoded.get("vertex", {})
    if not all(axis in vertex for axis in "xyz"):
        raise ValueError(f"{path}: PLY has no vertex element with x, y, z")
    pos = np.stack([np.asarray(vertex[axis], dtype=np.float64) for axis in "xyz"], axis=1)
    if len(pos) != next(e.count for e in elements if e.name == "vertex"):
        raise ValueError(f"{path}: truncated PLY vertex data")
    normal = None
    if all(key in vertex for key in ("nx", "ny", "nz")):
        normal = np.stack([np.asarray(vertex[key], dtype=np.float64) for key in ("nx", "ny", "nz")], axis=1)
    faces = None
    face = decoded.get("face", {})
    polygons = face.get("vertex_indices", face.get("vertex_index"))
    if polygons is not None:
        faces = triangulate_fans(list(polygons))
        _check_faces(path, faces, len(pos))
    return Geometry(pos, normal, faces)


def read_txt(path: str | Path) -> np.ndarray:
    """Read a comma- or whitespace-separated table of numbers; returns ``(N, C)`` float64."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read text file ({err})") from err
    rows = [line.replace(",", " ").split() for line in text.splitlines()]
    rows = [row for row in rows if row]
    if not rows:
        raise ValueError(f"{path}: empty point file")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: rows have different numbers of columns {sorted(widths)}")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: non-numeric value ({err})") from err


def read_npy(path: str | Path) -> np.ndarray:
    """Read an ``.npy`` array of points ``(N, C)`` (pickles refused)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read NPY file ({err})") from err
    if not isinstance(data, np.ndarray):  # np.load opens an .npz archive whatever the file is named
        data.close()
        raise ValueError(f"{path}: an .npz archive, not one .npy array; save the points with np.save")
    if data.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array (N, C), got shape {data.shape}")
    if data.dtype.kind not in "biuf":
        raise ValueError(f"{path}: expected real numbers, got dtype {data.dtype} (complex or non-numeric values are not coordinates)")
    if data.shape[0] == 0:
        raise ValueError(f"{path}: empty array (no points)")
    return data.astype(np.float64)


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, num_points: int, seed: int | np.random.Generator = 0, name: str = "mesh"
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``num_points`` points uniformly by area on a triangle mesh, with the faces' unit normals.

    Args:
        vertices: ``(V, 3)``; faces: ``(F, 3)`` vertex indices.
        seed: an int or a numpy Generator; the same seed gives the same points.
        name: the source named in errors (a file path).
    Returns:
        ``pos (num_points, 3)`` and ``normal (num_points, 3)``, float64. Normals follow the face
        winding (counter-clockwise = outward); meshes with inconsistent winding give mixed signs.
    """
    rng = np.random.default_rng(seed)
    if len(faces) == 0:
        raise ValueError(f"{name}: empty mesh (no faces)")
    corners = vertices[faces]  # (F, 3 corners, 3)
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # (F, 3)
    area = np.linalg.norm(cross, axis=1)
    if not np.all(np.isfinite(area)):
        raise ValueError(f"{name}: mesh has non-finite vertex coordinates")
    if area.sum() <= 0:
        raise ValueError(f"{name}: empty mesh (total surface area is zero)")
    chosen = rng.choice(len(faces), size=num_points, p=area / area.sum())
    u, v = rng.random((2, num_points, 1))
    flip = u + v > 1  # fold the unit square onto the triangle: uniform barycentric coordinates
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    a, b, c = corners[chosen, 0], corners[chosen, 1], corners[chosen, 2]
    pos = a + u * (b - a) + v * (c - a)
    normal = cross[chosen] / area[chosen, None]
    return pos, normal


def load_point_cloud(
    path: str | Path, mesh_points: int = 10000, seed: int | np.random.Generator = 0, mesh: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Points and normals from a ``.txt``, ``.npy``, ``.ply``, ``.off``, ``.obj`` or ``.stl`` file.

    Tables (txt/npy) hold 3 columns ``x y z`` or 6 columns ``x y z nx ny nz``. Meshes (stl, and off,
    ply, obj with faces) are sampled area-weighted with ``mesh_points`` points and face normals; an
    off, ply or obj file without faces (``element face 0``, ``OFF`` with 0 faces) is a point cloud
    with the file's vertex normals when it has them (``NOFF``, ``nx ny nz``, ``vn``), unless ``mesh``
    (a mesh dataset such as ModelNet's OFF files), where it is an empty mesh: an error.
    Returns ``pos (N, 3)`` and ``normal (N, 3)`` or None, float64.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".txt", ".npy"):
        table = read_txt(path) if suffix == ".txt" else read_npy(path)
        if table.shape[1] not in (3, 6):
            raise ValueError(f"{path}: expected 3 (xyz) or 6 (xyz + normal) columns, got {table.shape[1]}")
        return table[:, :3], (table[:, 3:] if table.shape[1] == 6 else None)
    readers = {".ply": read_ply, ".off": read_off, ".obj": read_obj, ".stl": read_stl}
    if suffix in readers:
        geometry = readers[suffix](path)
        if geometry.faces is None or len(geometry.faces) == 0:
            if mesh:
                raise ValueError(f"{path}: empty mesh (no faces)")
            return geometry.pos, geometry.normal
        return sample_surface(geometry.pos, geometry.faces, mesh_points, seed, name=str(path))
    raise ValueError(f"{path}: unsupported point file type {suffix!r} (expected one of {POINT_SUFFIXES})")
