# The worker side, included by tests/CMakeLists.txt.

# RunCommand and the --handlers file, without a broker.
ferry_test(unit/command_handler_test.cc ferry_command)
# A command's environment, output and outcome, without a process.
ferry_test(unit/command_io_test.cc ferry_command)

# The C++ worker SDK against a real in-process broker over loopback.
ferry_test(integration/worker_sdk_test.cc ferry_worker ferry_server
           ferry_storage)

# ferry-worker, ferryd and a client stub: the real binaries.
ferry_test(e2e/ferry_worker_test.cc ferry_e2e_support ferry_proto
           ferry_tls_testing)
ferry_e2e_binaries(ferry_worker_test)
