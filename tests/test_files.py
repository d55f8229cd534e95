import os

import pytest

from audiovae.files import replaced, write_text


def test_replaced_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.json"
    write_text(path, "old\n")
    with pytest.raises(RuntimeError), replaced(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.json"]  # no temp file left
    with replaced(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_text("new\n")
        assert path.read_text() == "old\n"  # replaced only when the block ends
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["out.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_replaced_without_overwrite_never_clobbers(tmp_path):
    path = tmp_path / "out.bin"
    with replaced(path, overwrite=False) as tmp:
        tmp.write_bytes(b"first")
    with pytest.raises(FileExistsError), replaced(path, overwrite=False) as tmp:
        tmp.write_bytes(b"second")
    assert path.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.bin"]
