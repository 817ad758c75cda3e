# gdb script for bench/hot-functions.sh: runs the riffle executable under gdb with a one-shot
# breakpoint at the entry of every function, and writes the functions that ran, in the order
# they first ran, to $HOT_OUT when the server exits. Each breakpoint disables itself at its
# first hit, so after start-up the server runs at nearly full speed.
#
# Start-up ends where the server gives back the pages it alone used (`release_startup_pages`,
# crates/server/src/resident.rs): there the breakpoints that start-up hit are armed again, so
# $HOT_OUT lists what the ready server runs, and $HOT_OUT.startup what only start-up ran.
#
#   HOT_BIN=BIN HOT_OUT=hits.txt gdb -q -batch -x bench/hot_functions.py BIN
import os
import subprocess

import gdb

BIN = os.path.realpath(os.environ["HOT_BIN"])
OUT = os.environ["HOT_OUT"]

for cmd in (
    "set pagination off",
    "set confirm off",
    "set print thread-events off",
    "set print inferior-events off",
    "handle SIGPIPE nostop noprint pass",
    "handle SIGTERM nostop noprint pass",
    "handle SIGINT nostop noprint pass",
):
    gdb.execute(cmd)
gdb.execute("starti")

# The executable is position independent: its load address is known once it is mapped.
pid = gdb.selected_inferior().pid
base = None
with open("/proc/%d/maps" % pid) as maps:
    for line in maps:
        f = line.split()
        if len(f) >= 6 and os.path.realpath(f[5]) == BIN:
            base = int(f[0].split("-")[0], 16) - int(f[2], 16)
            break
if base is None:
    raise gdb.GdbError("%s is not mapped" % BIN)

nm = subprocess.run(["nm", "--defined-only", BIN], capture_output=True, text=True, check=True)
functions = {}
for line in nm.stdout.splitlines():
    f = line.split()
    if len(f) == 3 and f[1] in "tTwW":
        functions.setdefault(int(f[0], 16), f[2])

hits = []
startup = None  # the breakpoints start-up hit, once it is over
BOUNDARY = "release_startup_pages"


class Entry(gdb.Breakpoint):
    def stop(self):
        global hits, startup
        hits.append(self)
        self.enabled = False
        if startup is None and BOUNDARY in self.function:
            startup, hits = hits, []
            for bp in startup:
                bp.enabled = True
        return False


for addr, name in functions.items():
    bp = Entry("*0x%x" % (base + addr), internal=True)
    bp.function = name
gdb.write("hot-functions: %d breakpoints\n" % len(functions))


def written(_event):
    ran = [bp.function for bp in hits]
    with open(OUT, "w") as out:
        out.write("".join(n + "\n" for n in ran))
    seen = set(ran)
    with open(OUT + ".startup", "w") as out:
        out.write("".join(bp.function + "\n" for bp in startup or [] if bp.function not in seen))


gdb.events.exited.connect(written)
gdb.execute("continue")
