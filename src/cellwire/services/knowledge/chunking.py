"""Dify's chunking: pre-processing rules, general chunks and parent-child chunks.

The behaviour follows Dify's indexing (``api/core/rag``): lengths are counted in characters;
the automatic rule splits at 500 characters with an overlap of 50; a custom rule first splits
at its separator and splits each piece longer than ``max_tokens`` recursively at
``"\\n\\n"``, ``"。"``, ``". "``, ``" "`` and finally between characters, merging small pieces
back up to ``max_tokens`` with ``chunk_overlap`` characters carried over; a chunk that starts
with ``.`` or ``。`` loses it. Parent-child ("hierarchical") splits parents by paragraph (the
parent segmentation) or takes the whole document as one parent, then splits each parent into
child chunks; children are searched, parents returned.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

#: Dify's bounds on a custom chunk length (INDEXING_MAX_SEGMENTATION_TOKENS_LENGTH default).
MIN_CHUNK, MAX_CHUNK = 50, 4000
_SEPARATORS = ["\n\n", "。", ". ", " ", ""]


class PreProcessingRule(BaseModel):
    id: Literal["remove_extra_spaces", "remove_urls_emails", "remove_stopwords"]
    enabled: bool = True


class Segmentation(BaseModel):
    separator: str = "\n\n"
    max_tokens: int = Field(500, ge=1)
    chunk_overlap: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _overlap_fits(self) -> Segmentation:
        if self.chunk_overlap > self.max_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) is larger than max_tokens "
                             f"({self.max_tokens}); make it smaller")
        return self


class ChunkRule(BaseModel):
    """How documents become chunks: Dify's ``process_rule`` (``mode`` and ``rules``)."""

    mode: Literal["automatic", "custom", "hierarchical"] = "automatic"
    pre_processing_rules: list[PreProcessingRule] = Field(default_factory=lambda: [
        PreProcessingRule(id="remove_extra_spaces", enabled=True),
        PreProcessingRule(id="remove_urls_emails", enabled=False)])
    segmentation: Segmentation = Field(default_factory=lambda: Segmentation(
        separator="\n", max_tokens=500, chunk_overlap=50))
    #: Parent-child only: parents by ``paragraph`` (the segmentation) or the ``full-doc``.
    parent_mode: Literal["paragraph", "full-doc"] = "paragraph"
    subchunk_segmentation: Segmentation = Field(default_factory=lambda: Segmentation(
        separator="\n", max_tokens=200, chunk_overlap=0))

    @model_validator(mode="after")
    def _lengths(self) -> ChunkRule:
        if self.mode != "automatic":
            for name, seg in (("segmentation", self.segmentation),
                              ("subchunk_segmentation", self.subchunk_segmentation)):
                if not MIN_CHUNK <= seg.max_tokens <= MAX_CHUNK:
                    raise ValueError(f"{name}.max_tokens is {seg.max_tokens}: a custom chunk "
                                     f"length must be between {MIN_CHUNK} and {MAX_CHUNK}")
        return self

    @classmethod
    def from_dify(cls, process_rule: dict[str, Any]) -> ChunkRule:
        """A rule from Dify's ``{"mode": ..., "rules": {...}}``."""
        rules = dict(process_rule.get("rules") or {})
        return cls.model_validate({"mode": process_rule.get("mode", "automatic"), **rules})


def clean(text: str, rule: ChunkRule) -> str:
    """Dify's CleanProcessor: invalid symbols always go; the enabled pre-processing rules
    collapse extra spaces and remove URLs and e-mail addresses (Markdown image URLs stay)."""
    text = text.replace("<|", "<").replace("|>", ">")
    text = re.sub(r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F\xEF\xBF\xBE]", "", text)
    text = text.replace("\ufffe", "")
    for pre in rule.pre_processing_rules:
        if not pre.enabled:
            continue
        if pre.id == "remove_extra_spaces":
            text = re.sub(r"\n{3,}", "\n\n", text)
            text = re.sub(r"[\t\f\r\x20\u00a0\u1680\u180e\u2000-\u200a\u202f\u205f\u3000]{2,}",
                          " ", text)
        elif pre.id == "remove_urls_emails":
            text = _remove_urls_emails(text)
    return text


def _remove_urls_emails(text: str) -> str:
    text = re.sub(r"([a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+)", "", text)
    kept: list[str] = []

    def hold(match: re.Match[str]) -> str:
        kept.append(match.group(1))
        return f"![image](__CELLWIRE_IMAGE_URL_{len(kept) - 1}__)"

    # Markdown image URLs stay; every other URL goes.
    text = re.sub(r"!\[.*?\]\((https?://[^\s)]+)\)", hold, text)
    text = re.sub(r"https?://[^\s)]+", "", text)
    for index, url in enumerate(kept):
        text = text.replace(f"__CELLWIRE_IMAGE_URL_{index}__", url)
    return text


@dataclass
class Splitter:
    """Dify's recursive character splitter (automatic mode: no fixed separator)."""

    chunk_size: int
    chunk_overlap: int
    fixed_separator: str | None = None
    separators: list[str] = field(default_factory=lambda: list(_SEPARATORS))

    def split(self, text: str) -> list[str]:
        if self.fixed_separator is None:
            return self._recursive(text, self.separators)
        separator = self.fixed_separator.replace("\\n", "\n")
        if separator.isascii():  # Dify decodes escapes such as "\\t"; text stays as it is
            separator = codecs.decode(separator, "unicode_escape")
        pieces = text.split(separator) if separator else [text]
        chunks: list[str] = []
        for piece in pieces:
            if len(piece) > self.chunk_size:
                chunks.extend(self._fixed_recursive(piece))
            else:
                chunks.append(piece)
        return chunks

    # The custom splitter's own recursion (FixedRecursiveCharacterTextSplitter).
    def _fixed_recursive(self, text: str) -> list[str]:
        separator, rest = self.separators[-1], []
        for index, candidate in enumerate(self.separators):
            if candidate == "":
                separator = candidate
                break
            if candidate in text:
                separator, rest = candidate, self.separators[index + 1:]
                break
        if separator == " ":
            splits = re.split(r" +", text)
        elif separator:
            parts = text.split(separator)
            splits = [s + separator for s in parts[:-1]] + parts[-1:]
        else:
            splits = list(text)
        splits = [s for s in splits if s != ""] if separator == "\n" else \
            [s for s in splits if s not in ("", "\n")]
        if separator == "":
            return self._by_characters(splits)
        return self._gather(splits, rest)

    def _by_characters(self, splits: list[str]) -> list[str]:
        chunks: list[str] = []
        current, overlap = "", ""
        for split in splits:
            if len(current) + len(split) <= self.chunk_size - self.chunk_overlap:
                current += split
            elif len(current) + len(split) <= self.chunk_size:
                current += split
                overlap += split
            else:
                chunks.append(current)
                current, overlap = overlap + split, ""
        if current:
            chunks.append(current)
        return chunks

    # The base recursive splitter (RecursiveCharacterTextSplitter, keep_separator=True).
    def _recursive(self, text: str, separators: list[str]) -> list[str]:
        separator, rest = separators[-1], []
        for index, candidate in enumerate(separators):
            if candidate == "":
                separator = candidate
                break
            if re.search(candidate, text):
                separator, rest = candidate, separators[index + 1:]
                break
        if separator:
            parts = re.split(f"({re.escape(separator)})", text)
            splits = [parts[i - 1] + parts[i] for i in range(1, len(parts), 2)]
            if len(parts) % 2:
                splits += parts[-1:]
        else:
            splits = list(text)
        splits = [s for s in splits if s not in ("", "\n")]
        return self._gather(splits, rest)

    def _gather(self, splits: list[str], rest: list[str]) -> list[str]:
        """Short splits merged into chunks; a split too long for one goes down to the next
        separators (Dify's splitters share this step)."""
        chunks: list[str] = []
        good: list[str] = []
        for split in splits:
            if len(split) < self.chunk_size:
                good.append(split)
                continue
            if good:
                chunks.extend(self._merge(good, ""))
                good = []
            chunks.extend(self._recursive(split, rest) if rest else [split])
        if good:
            chunks.extend(self._merge(good, ""))
        return chunks

    def _merge(self, splits: Iterable[str], separator: str) -> list[str]:
        docs: list[str] = []
        current: list[str] = []
        total = 0
        sep = len(separator)
        for split in splits:
            size = len(split)
            if total + size + (sep if current else 0) > self.chunk_size and current:
                joined = separator.join(current).strip()
                if joined:
                    docs.append(joined)
                # Keep the tail that fits in the overlap (and leaves room for this split).
                while total > self.chunk_overlap or (
                        total + size + (sep if current else 0) > self.chunk_size
                        and total > 0):
                    total -= len(current[0]) + (sep if len(current) > 1 else 0)
                    current = current[1:]
            current.append(split)
            total += size + (sep if len(current) > 1 else 0)
        joined = separator.join(current).strip()
        if joined:
            docs.append(joined)
        return docs


def _splitter(rule: ChunkRule, seg: Segmentation) -> Splitter:
    if rule.mode == "automatic":
        return Splitter(500, 50)
    return Splitter(seg.max_tokens, seg.chunk_overlap, fixed_separator=seg.separator)


def _tidy(chunks: Iterable[str]) -> list[str]:
    kept = []
    for chunk in chunks:
        if not chunk.strip():
            continue
        if chunk.startswith((".", "。")):
            chunk = chunk[1:].strip()
        if chunk:
            kept.append(chunk)
    return kept


@dataclass
class Chunk:
    """One chunk of a document: ``content`` is what is searched; ``parent`` (parent-child
    only) is what a hit on it returns, with ``parent_index`` its position among parents."""

    content: str
    position: int
    parent: str | None = None
    parent_index: int | None = None


def chunk_text(text: str, rule: ChunkRule | None = None) -> list[Chunk]:
    """The chunks of one document's text under ``rule`` (Dify's automatic rule by default)."""
    rule = rule or ChunkRule()
    text = clean(text, rule)
    if rule.mode != "hierarchical":
        return [Chunk(c, i) for i, c in enumerate(_tidy(_splitter(rule, rule.segmentation)
                                                        .split(text)))]
    parents = [text] if rule.parent_mode == "full-doc" else \
        _tidy(_splitter(rule, rule.segmentation).split(text))
    children = _splitter(rule, rule.subchunk_segmentation)
    chunks: list[Chunk] = []
    for index, parent in enumerate(parents):
        for child in _tidy(children.split(parent)):
            chunks.append(Chunk(child, len(chunks), parent=parent, parent_index=index))
    return chunks
