#ifndef FERRY_TESTS_RAW_CALL_H_
#define FERRY_TESTS_RAW_CALL_H_

// Calls a gRPC method by name with raw message bytes, for services whose
// .proto Debian does not ship (grpc.health.v1, server reflection).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"

namespace ferry::testing {

// One request message and one response message on `method`, as bytes: what
// a client without the method's .proto sends. Works for unary methods too
// (the wire format of a call does not depend on its streaming kind).
inline absl::StatusOr<std::string> RawCall(
    std::shared_ptr<grpc::Channel> channel, const std::string& method,
    const std::string& request) {
  grpc::GenericStub stub(std::move(channel));
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&ctx, method, &cq);
  // Each step completes (at the latest) at the call's deadline.
  auto step = [&cq](intptr_t expected) {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && tag == reinterpret_cast<void*>(expected) && ok;
  };
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  grpc::ByteBuffer in;
  call->StartCall(reinterpret_cast<void*>(1));
  bool ok = step(1);
  if (ok) {
    call->Write(out, reinterpret_cast<void*>(2));
    ok = step(2);
  }
  if (ok) {
    call->WritesDone(reinterpret_cast<void*>(3));
    ok = step(3);
  }
  bool got_response = false;
  if (ok) {
    call->Read(&in, reinterpret_cast<void*>(4));
    got_response = step(4);
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  cq.Shutdown();
  void* tag;
  bool drained_ok;
  while (cq.Next(&tag, &drained_ok)) {
  }
  if (!status.ok()) return FromGrpcStatus(status);
  if (!got_response) return absl::InternalError("OK but no response message");
  std::vector<grpc::Slice> slices;
  if (!in.Dump(&slices).ok()) return absl::InternalError("cannot read reply");
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

inline absl::StatusOr<std::string> RawCall(const std::string& address,
                                           const std::string& method,
                                           const std::string& request) {
  return RawCall(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()), method,
      request);
}

}  // namespace ferry::testing

#endif  // FERRY_TESTS_RAW_CALL_H_
