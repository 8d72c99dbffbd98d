"""caramba patch: rewrite candle-core's `src/backprop.rs` gradient sites (see CARAMBA_PATCH.md).

    python3 caramba_patch.py src/backprop.rs

Every `let X = grads.or_insert(A)?;` whose matching `*X = X.add(E)?` adds an `E` that does not read
`X` (nor does any statement in between) becomes those statements followed by
`grads.accumulate(A, E)?;`. The `.sub`, `scatter_add`, `index_add` and overwrite sites, those
whose expression reads the sum, and the convolution arms are kept. It prints every site and its
fate: review each by hand. `GradStore::accumulate` itself is added by hand (it is self-contained).
"""
import re
import sys


def match_paren(s, i):
    """Index of the `)` closing the `(` at s[i]."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced parentheses in {s!r}")


def main(path):
    lines = open(path).read().split("\n")
    let_re = re.compile(r"^(\s*)let (\w+) = grads\.or_insert\((\w+)\)\?;$")
    arm_re = re.compile(r"^\s{20}(&?Op::[A-Za-z0-9]+(?:\([^)]*\))?[^{]*)")
    out, rewritten, kept = [], [], []
    arm = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m_arm = arm_re.match(line)
        if m_arm and ("=>" in line or line.rstrip().endswith(("|", "{"))):
            arm = m_arm.group(1).strip()
        m = let_re.match(line)
        if not m:
            out.append(line)
            i += 1
            continue
        _, x, a = m.groups()
        j = i + 1
        while not re.match(r"^\s*\*%s = " % re.escape(x), lines[j]):
            j += 1
        assign, between = lines[j], lines[i + 1 : j]
        am = re.match(r"^(\s*)\*%s = %s\.(\w+)\((.*)$" % (re.escape(x), re.escape(x)), assign)
        reads_x = re.compile(r"\b%s\b" % re.escape(x))
        reason, e = None, None
        if "Conv" in (arm or ""):
            reason = "convolution arm"
        elif am is None:
            reason = "overwrites the sum (%s)" % assign.strip()
        elif am.group(2) != "add":
            reason = ".%s" % am.group(2)
        else:
            rest = assign[assign.index(".add(") + 4 :]
            k = match_paren(rest, 0)
            e, tail = rest[1:k], rest[k + 1 :].strip()
            if reads_x.search(e):
                reason = "the added expression reads %s" % x
            elif any(reads_x.search(b) for b in between):
                reason = "a statement in between reads %s" % x
            elif tail not in ("?", "?;"):
                reason = "unexpected tail %r" % tail
        if reason:
            kept.append((i + 1, arm, a, reason))
            out.append(line)
            i += 1
            continue
        out.extend(between)
        out.append("%sgrads.accumulate(%s, %s)?;" % (am.group(1), a, e))
        rewritten.append((i + 1, arm, a, len(between)))
        i = j + 1
    open(path, "w").write("\n".join(out))
    print("rewritten", len(rewritten))
    for r in rewritten:
        print("  line %d  %-48s %-6s statements moved above: %d" % r)
    print("kept", len(kept))
    for k in kept:
        print("  line %d  %-48s %-6s %s" % k)


if __name__ == "__main__":
    main(sys.argv[1])
