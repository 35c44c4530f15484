"""Run a command where user namespaces cannot be made, as under Docker's default seccomp
profile: unshare() and clone(CLONE_NEWUSER) fail with EPERM, clone3 with ENOSYS.

    python no_userns.py COMMAND [ARGS...]
"""
import ctypes
import os
import struct
import sys


def stmt(code, k):
    return struct.pack("HBBI", code, 0, 0, k)

def jump(code, k, jt, jf):
    return struct.pack("HBBI", code, jt, jf, k)

LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
prog = b"".join([
    stmt(LD, 0),                       # 0: syscall number
    jump(JEQ, 272, 5, 0),              # 1: unshare -> EPERM
    jump(JEQ, 435, 5, 0),              # 2: clone3 -> ENOSYS (glibc falls back to clone)
    jump(JEQ, 56, 0, 2),               # 3: clone -> look at its flags
    stmt(LD, 16),                      # 4: args[0], low 32 bits
    jump(JSET, 0x10000000, 1, 0),      # 5: CLONE_NEWUSER -> EPERM
    stmt(RET, ALLOW),                  # 6
    stmt(RET, ERRNO | 1),              # 7: EPERM
    stmt(RET, ERRNO | 38),             # 8: ENOSYS
])
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack("HxxxxxxQ", len(prog) // 8, ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog)
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    raise OSError(ctypes.get_errno(), "no_new_privs")
if libc.prctl(22, 2, ctypes.addressof(fbuf), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    raise OSError(ctypes.get_errno(), "seccomp")
os.execvp(sys.argv[1], sys.argv[1:])
