//! A Kafka record's headers read through librdkafka's C API, names as bytes.
//!
//! rdkafka's `Headers::iter()` turns each header name into a `&str` with `unwrap()`:
//! a producer that sends a name that is not UTF-8 (kcat can) panicked the source's
//! thread and stopped consumption for good. Here a name is read as bytes and made text
//! by the rules of [`crate::storable`] (bad bytes become U+FFFD); the value stays bytes.

use rdkafka::bindings as rdsys;
use rdkafka::message::BorrowedMessage;

/// The headers of `message`, in order: name as text, value as bytes (`None`: null).
pub fn read(message: &BorrowedMessage<'_>) -> Vec<(String, Option<Vec<u8>>)> {
    let mut headers_ptr: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is a live message owned by `message`; librdkafka keeps the
    // headers (and the names and values they point to) alive for as long as the message.
    unsafe {
        let err = rdsys::rd_kafka_message_headers(message.ptr(), &mut headers_ptr);
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers_ptr.is_null() {
            return Vec::new();
        }
        let count = rdsys::rd_kafka_header_cnt(headers_ptr);
        let mut headers = Vec::with_capacity(count);
        for idx in 0..count {
            let mut name: *const std::os::raw::c_char = std::ptr::null();
            let mut value: *const std::os::raw::c_void = std::ptr::null();
            let mut size = 0usize;
            let err =
                rdsys::rd_kafka_header_get_all(headers_ptr, idx, &mut name, &mut value, &mut size);
            if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(name).to_bytes();
            let value = (!value.is_null())
                .then(|| std::slice::from_raw_parts(value as *const u8, size).to_vec());
            headers.push((String::from_utf8_lossy(name).into_owned(), value));
        }
        headers
    }
}
