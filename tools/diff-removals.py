#!/usr/bin/env python3
"""Times `membergate diff` on every single-policy removal of a policy directory.

    cargo build --release
    python3 tools/diff-removals.py                 # every policy of policies/
    python3 tools/diff-removals.py role-ended      # only these ids

For each policy (`@id("...")` first, up to the `;` that ends it), a copy of the directory
without that policy's text is written to a temporary directory and
`target/release/membergate diff DIR COPY` is run on it; one line per removal is printed:
the id, the wall-clock seconds, the peak memory (with /usr/bin/time), the exit code (1: differences found,
0: equivalent, 2: no verdict) and how many request types differ each way.

Options: `--dir DIR` (default `policies`), `--bin PATH` (default
`target/release/membergate`), `--keep` to leave the copies in place, `--save DIR` to
write each `diff`'s output to DIR/ID.txt (to compare two builds).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def policy_spans(text):
    """Yields (id, start, end) of each policy in `text`: from its `@id(` to its `;`."""
    for m in re.finditer(r'@id\("([^"]*)"\)', text):
        i, depth, in_str = m.end(), 0, False
        while i < len(text):
            c = text[i]
            if in_str:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "/" and text.startswith("//", i):
                i = text.find("\n", i)
                if i < 0:
                    break
            elif c in "({[":
                depth += 1
            elif c in ")}]":
                depth -= 1
            elif c == ";" and depth == 0:
                end = i + 1
                if text.startswith("\n", end):
                    end += 1
                yield m.group(1), m.start(), end
                break
            i += 1


def main(argv):
    root, binary, keep, save, only = "policies", "target/release/membergate", False, None, []
    args = iter(argv)
    for a in args:
        if a == "--dir":
            root = next(args)
        elif a == "--bin":
            binary = next(args)
        elif a == "--keep":
            keep = True
        elif a == "--save":
            save = next(args)
            os.makedirs(save, exist_ok=True)
        else:
            only.append(a)
    policies = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".cedar"):
            with open(os.path.join(root, name)) as f:
                text = f.read()
            policies += [(pid, name, s, e) for pid, s, e in policy_spans(text)]
    if only:
        missing = set(only) - {p[0] for p in policies}
        if missing:
            sys.stderr.write("no such policy: %s\n" % ", ".join(sorted(missing)))
            return 2
        policies = [p for p in policies if p[0] in only]
    work = tempfile.mkdtemp(prefix="membergate-removals-")
    print("%-40s %7s %9s %4s %s" % ("removed policy", "s", "peak KB", "exit", "widened/narrowed"))
    worst = 0.0
    for pid, name, start, end in policies:
        copy = os.path.join(work, pid)
        shutil.copytree(root, copy)
        path = os.path.join(copy, name)
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text[:start] + text[end:])
        timing = os.path.join(work, "time")
        cmd = [binary, "diff", root, copy]
        if os.path.exists("/usr/bin/time"):
            cmd = ["/usr/bin/time", "-o", timing, "-f", "%M"] + cmd
        t = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True)
        secs = time.monotonic() - t
        peak = ""
        if os.path.exists(timing):
            with open(timing) as f:
                peak = f.read().strip().splitlines()[-1]
            os.remove(timing)
        worst = max(worst, secs)
        counts = dict(re.findall(r"^the new policies (allow|deny) .*?: (\d+|nothing)",
                                 out.stdout, re.M))
        print("%-40s %7.2f %9s %4d %s/%s" % (
            pid, secs, peak, out.returncode,
            counts.get("allow", "?"), counts.get("deny", "?")))
        if save:
            with open(os.path.join(save, pid + ".txt"), "w") as f:
                f.write(out.stdout)
        if out.returncode == 2:
            sys.stderr.write(out.stderr)
        if not keep:
            shutil.rmtree(copy)
    print("slowest: %.2f s over %d removals" % (worst, len(policies)))
    if not keep:
        os.rmdir(work)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
