#!/usr/bin/env python3
"""Counts the public API of a crate from its rustdoc JSON.

    cargo +nightly rustdoc -p extractor-runtime --lib -- -Z unstable-options --output-format json
    python3 tools/public-api.py target/doc/extractor_runtime.json [--list]

Walks what a user of the crate can name, from the crate root: modules, re-exports, types,
traits, functions, constants, and the methods of inherent impls, variants and public fields.
Trait impls (`Debug::fmt`, `From::from`) are not counted: they add no name. "Items" are the
named things a user meets in the docs (everything but methods, fields and variants); "members"
are those three.
"""

import json
import sys
from collections import Counter


def main() -> None:
    path = sys.argv[1]
    listing = "--list" in sys.argv
    doc = json.load(open(path))
    index = doc["index"]
    root = str(doc["root"])
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    names: list[str] = []

    def member(kind: str, name: str) -> None:
        counts[kind] += 1
        names.append(f"{kind} {name}")

    def kind_of(item: dict) -> str:
        return next(iter(item["inner"]))

    def count(item_id: str, prefix: str) -> None:
        item_id = str(item_id)
        if item_id in seen or item_id not in index:
            return
        seen.add(item_id)
        item = index[item_id]
        kind = kind_of(item)
        inner = item["inner"][kind]
        name = item.get("name") or ""
        here = f"{prefix}::{name}" if prefix and name else (name or prefix)
        if kind == "use":
            target = inner.get("id")
            if target is not None and str(target) in index:
                # A re-export of one of the crate's own items: count the item where it is
                # re-exported (once).
                count(str(target), prefix)
                return
            counts["re-export"] += 1
            names.append(f"re-export {prefix}::{inner['name']}")
            return
        if kind == "impl":
            if inner.get("trait") is not None:
                return
            for child in inner["items"]:
                child_item = index.get(str(child))
                if child_item and child_item.get("visibility") == "public":
                    count(child, prefix)
            return
        if kind == "function" and item_id in method_ids:
            member("method", here)
            return
        member(kind, here)
        if kind == "module":
            for child in inner["items"]:
                count(child, here)
        elif kind == "struct":
            shape = inner["kind"]
            fields = shape.get("plain", {}).get("fields", []) if isinstance(shape, dict) else []
            for f in fields:
                f_item = index.get(str(f))
                if f_item and f_item.get("visibility") == "public":
                    member("field", f"{here}.{f_item['name']}")
            for i in inner["impls"]:
                count(i, here)
        elif kind == "enum":
            for v in inner["variants"]:
                member("variant", f"{here}::{index[str(v)]['name']}")
            for i in inner["impls"]:
                count(i, here)
        elif kind == "trait":
            for child in inner["items"]:
                member("trait member", f"{here}::{index[str(child)]['name']}")

    method_ids: set[str] = set()
    for item in index.values():
        if kind_of(item) == "impl":
            for child in item["inner"]["impl"]["items"]:
                method_ids.add(str(child))

    count(root, "")
    members = {"method", "field", "variant", "trait member"}
    items = sum(v for k, v in counts.items() if k not in members)
    print(f"items: {items - 1} (the crate root not counted)")
    print(f"members: {sum(v for k, v in counts.items() if k in members)}")
    for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {k}: {v}")
    if listing:
        for n in sorted(names):
            print(n)


if __name__ == "__main__":
    main()
