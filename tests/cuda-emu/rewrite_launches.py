"""Turns a .cu file into C++ for the host emulation (emu.h): every kernel
launch k<<<grid, block>>>(args); becomes emu_launch(grid, block, [&] { k(args); });
and cuda_runtime.h (the real runtime, not emulated) is no longer included;
a #line directive keeps compiler messages pointing into the .cu file.
Fails if a launch is left that it could not rewrite.
    python3 rewrite_launches.py IN.cu OUT.cpp"""
import re
import sys


def split_top_level(text, sep):
    """text cut at the separators outside any () or []."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in '([':
            depth += 1
        elif ch in ')]':
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def closing_paren(text, open_at):
    """Index of the ')' matching the '(' at open_at."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == '(':
            depth += 1
        elif text[i] == ')':
            depth -= 1
            if depth == 0:
                return i
    raise SystemExit('rewrite_launches: unbalanced parentheses after offset %d' % open_at)


def rewrite(src):
    out, pos = [], 0
    launch = re.compile(r'(\w+)<<<(.*?)>>>\s*\(', re.S)
    while True:
        m = launch.search(src, pos)
        if not m:
            out.append(src[pos:])
            return ''.join(out)
        config = split_top_level(m.group(2), ',')
        if len(config) != 2:
            raise SystemExit('rewrite_launches: launch of %s: expected <<<grid, block>>>, got <<<%s>>>'
                             % (m.group(1), m.group(2)))
        close = closing_paren(src, m.end() - 1)
        args = src[m.end():close]
        out.append(src[pos:m.start()])
        out.append('emu_launch(%s, %s, [&] { %s(%s); })' % (config[0], config[1], m.group(1), args))
        pos = close + 1


def main():
    src = open(sys.argv[1]).read().replace('#include <cuda_runtime.h>\n', '\n')
    cpp = rewrite(src)
    if '<<<' in cpp:
        raise SystemExit('rewrite_launches: %s: a launch was left unrewritten' % sys.argv[1])
    with open(sys.argv[2], 'w') as f:
        f.write('#include "emu.h"\n#line 1 "%s"\n%s' % (sys.argv[1], cpp))


main()
