#!/usr/bin/env python3
"""An interactive cvc5 that reads SMT-LIB 2.6 commands on stdin and answers on stdout.

It stands in for the `cvc5 --lang smt` executable that `cedar-policy-symcc` drives, using
the solver library shipped in the PyPI package `cvc5` (1.3 or newer):

    python3 -m pip install cvc5==1.4.2
    CVC5=tools/cvc5-smt.py membergate verify

Each complete command is parsed with a fresh `InputParser` over one `SymbolManager` and
run at once, so answers come back as the commands arrive. `(reset)` starts a fresh solver
and symbol manager. `--tlimit=N` bounds each check to N milliseconds (cvc5's `tlimit-per`).
"""
import sys

try:
    import cvc5
except ImportError:
    sys.stderr.write(
        "the Python package cvc5 is not installed: python3 -m pip install cvc5==1.4.2\n")
    sys.exit(127)


def commands(stream):
    """Yields the text of each complete top-level command read from `stream`.

    Several commands on one line come as one text. Lines without strings, quoted symbols
    or comments (all that the symbolic compiler writes) are counted with `str.count`.
    """
    buf, depth, in_str, in_sym = [], 0, False, False
    for line in stream:
        if not (in_str or in_sym) and not any(c in line for c in '"|;'):
            depth += line.count("(") - line.count(")")
            buf.append(line)
        else:
            i = 0
            while i < len(line):
                c = line[i]
                if in_str:
                    if c == '"':
                        if line[i + 1:i + 2] == '"':
                            buf.append('"')
                            i += 1
                        else:
                            in_str = False
                elif in_sym:
                    in_sym = c != "|"
                elif c == ";":
                    buf.append("\n")
                    break
                elif c == '"':
                    in_str = True
                elif c == "|":
                    in_sym = True
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                buf.append(c)
                i += 1
        if depth <= 0 and not (in_str or in_sym):
            text = "".join(buf).strip()
            buf, depth = [], 0
            if text:
                yield text


# Commands that print nothing (without `:print-success`): they are batched and parsed
# together with the next command that answers, which saves a parser per command. A text
# (one line may hold several commands) is silent only if it holds no answering command.
SILENT = ("(declare-", "(define-", "(assert", "(set-", "(push", "(pop")
ANSWERING = ("(check-sat", "(get-", "(reset", "(exit", "(echo")


def silent(text):
    return text.startswith(SILENT) and not any(a in text for a in ANSWERING)


def main(argv):
    tlimit = None
    for arg in argv:
        if arg.startswith("--tlimit="):
            tlimit = arg.split("=", 1)[1]
        elif arg not in ("--lang", "smt", "--lang=smt"):
            sys.stderr.write("unsupported argument: %s\n" % arg)
            return 2
    tm = cvc5.TermManager()

    def fresh():
        solver = cvc5.Solver(tm)
        if tlimit is not None:
            solver.setOption("tlimit-per", tlimit)
        return solver, cvc5.SymbolManager(tm)

    solver, sm = fresh()
    out = sys.stdout
    pending = []

    def run(text):
        """Parses and runs `text` (complete commands); False after `(exit)`."""
        try:
            parser = cvc5.InputParser(solver, sm)
            parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, text, "stdin")
            while True:
                cmd = parser.nextCommand()
                if cmd.isNull():
                    return True
                if cmd.getCommandName() == "exit":
                    return False
                out.write(cmd.invoke(solver, sm))
        except Exception as e:  # the solver's own errors, in cvc5's own form
            msg = str(e).replace('"', "'").replace("\n", " ")
            out.write('(error "%s")\n' % msg)
            return True

    for text in commands(sys.stdin):
        if silent(text):
            pending.append(text)
            continue
        if "".join(text.split()) == "(reset)":
            pending = []
            solver, sm = fresh()
            continue
        pending.append(text)
        going = run("\n".join(pending))
        pending = []
        out.flush()
        if not going:
            return 0
    if pending:
        run("\n".join(pending))
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
