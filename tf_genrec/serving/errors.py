"""One error type carrying a gRPC status code, shared by gRPC and REST."""
import grpc

# REST answers with the HTTP code TF Serving's HTTP handler uses per status.
HTTP_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


class ServingError(Exception):
  """A request failure with the status code the client should see."""

  def __init__(self, code, message):
    super().__init__(message)
    self.code = code
    self.message = message

  @property
  def http_code(self):
    return HTTP_CODES.get(self.code, 500)


def invalid(message):
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message):
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def exhausted(message):
  return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
