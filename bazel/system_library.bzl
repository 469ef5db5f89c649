"""Wraps a Debian library found by pkg-config as a cc_library.

Bazel 4.2.3 cannot download dependencies here, so every C++ dependency comes
from the system. The repository rule runs pkg-config once per fetch and writes
a BUILD file whose copts/linkopts carry the flags it printed.
"""

def _flags(ctx, kind, modules):
    result = ctx.execute(["pkg-config", kind] + modules)
    if result.return_code != 0:
        fail("pkg-config %s %s failed (is the -dev package installed? run ./tools/install-deps.sh): %s" %
             (kind, " ".join(modules), result.stderr))
    return [f for f in result.stdout.strip().split(" ") if f]

def _system_library_impl(ctx):
    cflags = _flags(ctx, "--cflags", ctx.attr.modules)
    libs = _flags(ctx, "--libs", ctx.attr.modules) + ctx.attr.extra_linkopts
    ctx.file("BUILD.bazel", """
cc_library(
    name = "{name}",
    copts = {copts},
    linkopts = {linkopts},
    visibility = ["//visibility:public"],
)
""".format(name = ctx.attr.name, copts = repr(cflags), linkopts = repr(libs)))

system_library = repository_rule(
    implementation = _system_library_impl,
    attrs = {
        "modules": attr.string_list(mandatory = True),
        "extra_linkopts": attr.string_list(default = []),
    },
    environ = ["PKG_CONFIG_PATH"],
    local = True,
)
