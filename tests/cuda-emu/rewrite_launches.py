"""Turns a .cu file into C++ for the host emulation (emu.h): every kernel
launch k<<<grid, block>>>(args); becomes emu_launch(grid, block, [&] { k(args); });
(a launch's shared memory size and stream are dropped: the emulation runs
every launch at once, in order) and cuda_runtime.h (the real runtime, not
emulated) is no longer included; a #line directive keeps compiler messages
pointing into the .cu file. Fails if a launch is left that it could not rewrite.
With --seq (backend.sh, emu_seq.h) a kernel that never calls __syncthreads
launches through emu_launch_seq (its threads one after another on the
calling thread), one that does through emu_launch_fibers.
    python3 rewrite_launches.py [--seq] IN.cu OUT.cpp"""
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


def syncing_kernels(src):
    """Names of the __global__ functions whose body calls __syncthreads."""
    names = set()
    for m in re.finditer(r'__global__[^;{]*?\b(\w+)\s*\(', src):
        body = src.find('{', closing_paren(src, m.end() - 1))
        depth = 0
        for i in range(body, len(src)):
            depth += {'{': 1, '}': -1}.get(src[i], 0)
            if depth == 0:
                break
        if '__syncthreads' in src[body:i]:
            names.add(m.group(1))
    return names


def launcher(kernel, seq, syncing):
    if not seq:
        return 'emu_launch'
    return 'emu_launch_fibers' if kernel in syncing else 'emu_launch_seq'


def rewrite(src, seq=False):
    syncing = syncing_kernels(src)
    out, pos = [], 0
    # the kernel, with explicit template arguments if any (k<4><<<...>>>)
    launch = re.compile(r'(\w+)((?:<[^<>;]*>)?)<<<(.*?)>>>\s*\(', re.S)
    while True:
        m = launch.search(src, pos)
        if not m:
            out.append(src[pos:])
            return ''.join(out)
        config = split_top_level(m.group(3), ',')
        if not 2 <= len(config) <= 4:
            raise SystemExit('rewrite_launches: launch of %s: expected <<<grid, block[, shared[, stream]]>>>, '
                             'got <<<%s>>>' % (m.group(1), m.group(3)))
        close = closing_paren(src, m.end() - 1)
        args = src[m.end():close]
        out.append(src[pos:m.start()])
        out.append('%s(%s, %s, [&] { %s(%s); })'
                   % (launcher(m.group(1), seq, syncing), config[0], config[1], m.group(1) + m.group(2), args))
        pos = close + 1


def main():
    args = sys.argv[1:]
    seq = args[:1] == ['--seq']
    if seq:
        args = args[1:]
    src = open(args[0]).read().replace('#include <cuda_runtime.h>\n', '\n')
    cpp = rewrite(src, seq)
    if '<<<' in cpp:
        raise SystemExit('rewrite_launches: %s: a launch was left unrewritten' % args[0])
    with open(args[1], 'w') as f:
        f.write('#include "%s"\n#line 1 "%s"\n%s' % ('emu_seq.h' if seq else 'emu.h', args[0], cpp))


main()
