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


def test_replaced_without_overwrite_never_clobbers(tmp_path):
    path = tmp_path / "out.bin"
    with replaced(path, overwrite=False) as tmp:
        tmp.write_bytes(b"first")
    with pytest.raises(FileExistsError), replaced(path, overwrite=False) as tmp:
        tmp.write_bytes(b"second")
    assert path.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_replaced_gives_the_umasks_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "out.txt", "new\n")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_replaced_names_the_file_it_could_not_write(tmp_path):
    path = tmp_path / "missing" / "out.txt"
    with pytest.raises(FileNotFoundError) as e, replaced(path):
        pass
    assert e.value.filename == str(path)  # not its temp file
    with pytest.raises(FileNotFoundError) as e, replaced(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        (tmp_path / "other").read_text()  # the block's own error: left as it is
    assert e.value.filename == str(tmp_path / "other") and os.listdir(tmp_path) == []
