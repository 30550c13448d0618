# The client side: the C++ SDK and the ferry CLI.

# The SDK against the real server over loopback with a fake clock.
ferry_test(integration/client_test.cc ferry_client ferry_server ferry_storage)

# The CLI in process (RunCli) against the real server with a fake clock.
ferry_test(integration/cli_test.cc ferry_cli ferry_server ferry_storage)

# The ferry binary end to end: a real ferryd (one per suite) and ferry-worker.
ferry_test(e2e/ferry_cli_test.cc ferry_e2e_support ferry_proto)
ferry_e2e_binaries(ferry_cli_test)

# The SDKs' TLS and tokens (ClientOptions::connect, WorkerOptions::connect)
# against a fake broker that checks them.
ferry_test(integration/connect_sdk_test.cc ferry_client ferry_worker
           ferry_tls_testing)

# The CLI's TLS and token options, hints and exit codes, against a fake
# broker that checks them; `ferry token` on files, without a broker.
ferry_test(integration/cli_auth_test.cc ferry_cli ferry_tls_testing)
ferry_test(unit/cli_token_test.cc ferry_cli ferry_auth)

# The real ferry, ferry-worker and ferryd with mutual TLS and tokens made by
# `ferry token create`.
ferry_test(e2e/secure_cli_test.cc ferry_e2e_support ferry_proto
           ferry_tls_testing)
ferry_e2e_binaries(secure_cli_test)
