"""A PNG chart of throughput against runs in flight, written with the standard library only.

Why not matplotlib: it is not installed here and would be the benchmark's only third-party
dependency (plus numpy, pillow, fonttools, ...) for one line chart. A raster canvas, a 5x7
pixel font and a PNG encoder (zlib + struct) are about 250 lines, need no network and no
extra, and give the same picture on every machine.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (30, 30, 30)
GREY: Color = (205, 205, 205)
BLUE: Color = (31, 90, 180)
LIGHT_BLUE: Color = (120, 160, 220)
RED: Color = (200, 40, 40)

_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    " ": (".....",) * 7,
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "/": (".....", "....#", "...#.", "..#..", ".#...", "#....", "....."),
    "(": ("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."),
    ")": (".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."),
    "=": (".....", ".....", "#####", ".....", "#####", ".....", "....."),
    "%": ("##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
}


class Canvas:
    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        for y in range(max(0, min(y0, y1)), min(self.height, max(y0, y1) + 1)):
            for x in range(max(0, min(x0, x1)), min(self.width, max(x0, x1) + 1)):
                self.dot(x, y, color)

    def line(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        color: Color,
        width: int = 1,
        dash: int = 0,
    ) -> None:
        steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0))))
        half = width // 2
        for step in range(steps + 1):
            if dash and (step // dash) % 2:
                continue
            x = round(x0 + (x1 - x0) * step / steps)
            y = round(y0 + (y1 - y0) * step / steps)
            self.rect(x - half, y - half, x - half + width - 1, y - half + width - 1, color)

    def disc(self, cx: int, cy: int, radius: int, color: Color) -> None:
        for y in range(-radius, radius + 1):
            for x in range(-radius, radius + 1):
                if x * x + y * y <= radius * radius:
                    self.dot(cx + x, cy + y, color)

    def text(
        self,
        x: int,
        y: int,
        text: str,
        color: Color = BLACK,
        scale: int = 2,
        vertical: bool = False,
    ) -> None:
        """Draw ``text`` (upper-cased) with its top-left at (x, y); ``vertical`` reads upwards."""
        for index, char in enumerate(text.upper()):
            glyph = _GLYPHS.get(char, _GLYPHS[" "])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit != "#":
                        continue
                    gx = index * 6 + col
                    for sy in range(scale):
                        for sx in range(scale):
                            if vertical:
                                self.dot(x + row * scale + sy, y - gx * scale - sx, color)
                            else:
                                self.dot(x + gx * scale + sx, y + row * scale + sy, color)

    @staticmethod
    def text_width(text: str, scale: int = 2) -> int:
        return len(text) * 6 * scale - scale

    def png(self) -> bytes:
        raw = bytearray()
        stride = 3 * self.width
        for y in range(self.height):
            raw.append(0)  # filter: none
            raw += self.pixels[y * stride : (y + 1) * stride]

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
            + chunk(b"IEND", b"")
        )


@dataclass
class Point:
    x: float
    median: float
    low: float
    high: float


def _ticks(low: float, high: float) -> list[float]:
    ticks = []
    decade = 10 ** math.floor(math.log10(low))
    while decade <= high:
        for m in (1, 2, 5):
            value = m * decade
            if low <= value <= high:
                ticks.append(value)
        decade *= 10
    return ticks


def _label(value: float) -> str:
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def throughput_chart(
    path: Path, points: list[Point], run_seconds: float, repetitions: int, note: str = ""
) -> None:
    """Log-log: measured throughput (median, min-max) per C, the ideal C / L and 95 % of it."""
    width, height = 960, 600
    left, right, top, bottom = 110, 40, 70, 90
    canvas = Canvas(width, height)
    xs = [p.x for p in points]
    ys = [v for p in points for v in (p.low, p.high)] + [x / run_seconds for x in xs]
    x_lo, x_hi = min(xs) / 2, max(xs) * 2
    y_lo, y_hi = min(ys) / 2, max(ys) * 2

    def px(x: float) -> float:
        share = (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))
        return left + share * (width - left - right)

    def py(y: float) -> float:
        share = (math.log10(y) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
        return height - bottom - share * (height - top - bottom)

    for tick in _ticks(x_lo, x_hi):
        x = round(px(tick))
        canvas.line(x, top, x, height - bottom, GREY)
        label = _label(tick)
        canvas.text(x - Canvas.text_width(label) // 2, height - bottom + 10, label)
    for tick in _ticks(y_lo, y_hi):
        y = round(py(tick))
        canvas.line(left, y, width - right, y, GREY)
        label = _label(tick)
        canvas.text(left - 10 - Canvas.text_width(label), y - 7, label)
    canvas.line(left, top, left, height - bottom, BLACK, 2)
    canvas.line(left, height - bottom, width - right, height - bottom, BLACK, 2)

    canvas.line(px(x_lo), py(x_lo / run_seconds), px(x_hi), py(x_hi / run_seconds), BLUE, 3)
    canvas.line(
        px(x_lo),
        py(0.95 * x_lo / run_seconds),
        px(x_hi),
        py(0.95 * x_hi / run_seconds),
        LIGHT_BLUE,
        2,
        dash=8,
    )
    ordered = sorted(points, key=lambda p: p.x)
    for a, b in itertools.pairwise(ordered):
        canvas.line(px(a.x), py(a.median), px(b.x), py(b.median), RED, 2)
    for p in ordered:
        x = round(px(p.x))
        canvas.line(x, py(p.low), x, py(p.high), RED, 2)
        canvas.line(x - 6, py(p.low), x + 6, py(p.low), RED, 2)
        canvas.line(x - 6, py(p.high), x + 6, py(p.high), RED, 2)
        canvas.disc(x, round(py(p.median)), 6, RED)
        share = 100 * p.median / (p.x / run_seconds)
        canvas.text(x + 12, round(py(p.median)) + 6, f"{p.median:,.0f} ({share:.0f}%)", RED)

    title = f"THROUGHPUT VS RUNS IN FLIGHT, EVERY RUN TAKES L = {run_seconds:g} S"
    canvas.text((width - Canvas.text_width(title)) // 2, 20, title)
    x_title = "RUNS IN FLIGHT C (PIPELINE.MAX_IN_FLIGHT)"
    canvas.text((width - Canvas.text_width(x_title)) // 2, height - 45, x_title)
    y_title = "EVENTS PER SECOND"
    canvas.text(
        20, (height - bottom + top) // 2 + Canvas.text_width(y_title) // 2, y_title, vertical=True
    )

    lx, ly = left + 20, top + 15
    canvas.rect(lx - 10, ly - 10, lx + 470, ly + 80, WHITE)
    canvas.line(lx, ly + 7, lx + 40, ly + 7, BLUE, 3)
    canvas.text(lx + 50, ly, "IDEAL C / L", BLUE)
    canvas.line(lx, ly + 32, lx + 40, ly + 32, LIGHT_BLUE, 2, dash=8)
    canvas.text(lx + 50, ly + 25, "TARGET 95 % OF C / L", LIGHT_BLUE)
    canvas.disc(lx + 20, ly + 57, 6, RED)
    reps = f"MEASURED: MEDIAN, MIN-MAX OF {repetitions}"
    canvas.text(lx + 50, ly + 50, reps if repetitions > 1 else "MEASURED: 1 REPETITION", RED)
    if note:
        canvas.text(width - right - Canvas.text_width(note), height - 22, note, GREY)
    path.write_bytes(canvas.png())
