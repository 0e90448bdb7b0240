"""TextStream: UTF-8-safe incremental detokenization and stop-string hold-back.

Most tests use a byte-level "tokenizer" (one token per UTF-8 byte), the hardest case for
partial characters; one test uses the bundled model's real tokenizer.
"""

from __future__ import annotations

from mcp_server.engines.embedded.textstream import TextStream


def byte_decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def feed(text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], TextStream]:
    """Push ``text`` byte by byte; return every piece pushed out (flush included)."""
    stream = TextStream(byte_decode, stop)
    pieces = [stream.push(b) for b in text.encode()]
    pieces.append(stream.flush())
    return pieces, stream


def test_multibyte_characters_are_never_split():
    text = "héllo 👋 世界 ok 🇫🇷"
    pieces, _ = feed(text)
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_text_is_released_as_soon_as_a_character_is_complete():
    stream = TextStream(byte_decode)
    emoji = "👋".encode()
    assert [stream.push(b) for b in emoji[:-1]] == ["", "", ""]
    assert stream.push(emoji[-1]) == "👋"


def test_stop_string_is_cut_with_everything_after_it():
    pieces, stream = feed("abc END def", stop=("END",))
    assert "".join(pieces) == "abc "
    assert stream.stopped


def test_no_prefix_of_a_stop_string_is_emitted_while_it_may_complete():
    stream = TextStream(byte_decode, ("STOP",))
    emitted = [stream.push(b) for b in b"go ST"]
    assert "".join(emitted) == "go "
    assert stream.push(ord("x")) == "STx"  # the held prefix turned out harmless
    assert not stream.stopped


def test_held_prefix_is_released_at_the_end():
    pieces, stream = feed("value: ST", stop=("STOP",))
    assert pieces[-1] == "ST"
    assert "".join(pieces) == "value: ST"
    assert not stream.stopped


def test_earliest_of_several_stop_strings_wins():
    pieces, _ = feed("one two three", stop=("three", "two"))
    assert "".join(pieces) == "one "


def test_stop_string_made_of_multibyte_characters():
    pieces, stream = feed("日本語のテキスト", stop=("のテ",))
    assert "".join(pieces) == "日本語"
    assert stream.stopped
    assert not any("\ufffd" in piece for piece in pieces)


def test_tokens_after_a_stop_are_ignored():
    stream = TextStream(byte_decode, ("!",))
    assert stream.push(ord("!")) == ""
    assert stream.push(ord("a")) == ""
    assert stream.flush() == ""


def test_real_tokenizer_streams_emoji_and_cjk_whole(engine):
    tokenizer = engine.tokenizer
    text = "Hi 👋! 你好，世界。 Ça va? 🇯🇵🎉"
    ids = tokenizer.encode(text, add_special_tokens=False)
    stream = TextStream(lambda t: tokenizer.decode(t, skip_special_tokens=True))
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_a_character_cut_off_at_the_end_is_dropped_not_sent_as_replacement():
    stream = TextStream(byte_decode)
    pieces = [stream.push(b) for b in "ok 👋".encode()[:-2]]
    pieces.append(stream.flush())
    assert "".join(pieces) == "ok "
