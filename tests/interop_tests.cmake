# Interop, included by tests/CMakeLists.txt: the real ferryd from clients
# that share no code with it. The Python examples (examples/python) run
# against it on stubs generated at test time by Debian's /usr/bin/python3
# with python3-grpcio and python3-grpc-tools (deploy/common.sh installs
# them); reflection and health are checked with a generic gRPC stub.
ferry_test(interop/interop_test.cc ferry_e2e_support ferry_client ferry_proto
           ferry_tls_testing)
ferry_e2e_binaries(interop_test)
