"""cc_grpc_library: .proto files -> C++ messages and gRPC stubs.

Native proto rules need the protobuf source repository, which cannot be
fetched offline, so this runs Debian's protoc and grpc_cpp_plugin in a genrule.
Protos import each other relative to the package that holds them (for api/,
"imagetemplates/v1/common.proto"); the well-known types come from /usr/include.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")

def _strip_ext(src):
    return src[:-len(".proto")]

def cc_grpc_library(name, srcs, deps = [], grpc = True, headers_only = False, alwayslink = False, visibility = None, testonly = False):
    """Generates `name` (a cc_library) from srcs, files of the calling package.

    Args:
      name: the cc_library's name.
      srcs: .proto paths relative to the package, source or generated.
      deps: other cc_grpc_library targets whose protos srcs import.
      grpc: also generate service stubs (*.grpc.pb.{h,cc}).
      headers_only: the compiled code already lives in a system library
        (libgrpc++_reflection); only the headers are needed.
      alwayslink: link the descriptors even if no symbol is referenced, so
        server reflection can describe them.
      visibility: of the cc_library.
      testonly: as for any rule.
    """
    hdrs = []
    cc_srcs = []
    for src in srcs:
        base = _strip_ext(src)
        hdrs.append(base + ".pb.h")
        cc_srcs.append(base + ".pb.cc")
        if grpc:
            hdrs.append(base + ".grpc.pb.h")
            cc_srcs.append(base + ".grpc.pb.cc")

    pkg = native.package_name()
    grpc_flags = ""
    if grpc:
        grpc_flags = ("--grpc_out=$(GENDIR)/{pkg} " +
                      "--plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) ").format(pkg = pkg)
    native.genrule(
        name = name + "_protoc",
        srcs = srcs + [d + "_protos" for d in deps],
        outs = hdrs + cc_srcs,
        cmd = ("protoc $$([ -d {pkg} ] && echo -I{pkg}) -I$(GENDIR)/{pkg} -I/usr/include " +
               "--cpp_out=$(GENDIR)/{pkg} {grpc_flags}" +
               " ".join([src for src in srcs])).format(pkg = pkg, grpc_flags = grpc_flags),
        testonly = testonly,
        message = "protoc " + name,
    )
    native.filegroup(
        name = name + "_protos",
        srcs = srcs + [d + "_protos" for d in deps],
        visibility = visibility,
        testonly = testonly,
    )
    cc_library(
        name = name,
        srcs = [] if headers_only else cc_srcs,
        hdrs = hdrs,
        includes = ["."],
        alwayslink = alwayslink,
        deps = deps + ["@grpc"],
        visibility = visibility,
        testonly = testonly,
    )
