"""KEDA's external scaler protocol: the `external` and `external-push` triggers (see
`scalers.external.scaler`); `externalscaler_pb2` is generated from `externalscaler.proto`."""
