//! The payload builder (APK, idsig, metadata, payload disk). Filled by the payload issue.
