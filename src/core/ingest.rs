//! Pure planning of one POST: STUB
