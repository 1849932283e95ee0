"""Tuxpaint's photo stamps as five classes: the offline photo set the benchmarks share (importing it
loads nothing but pathlib)."""

from pathlib import Path

STAMPS = Path("/usr/share/tuxpaint/stamps")
MAPPING = {  # class -> glob patterns under STAMPS, as scrape.folder.mapping takes them
    "mammals": ["animals/mammals/**/*.png"],
    "birds": ["animals/birds/**/*.png"],
    "fruit": ["food/fruit/**/*.png"],
    "flowers": ["plants/flowers/**/*.png"],
    "vehicles": ["vehicles/**/*.png"],
}
