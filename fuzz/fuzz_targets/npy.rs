//! Any `.npy` bytes (`--noise-in`): decoding never panics or allocates beyond the input, a refusal
//! names the file, and an accepted array re-encodes to bytes that decode to the same bits.
#![no_main]

use acufarm_worker::pipeline::npy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match npy::decode(bytes, "noise/fuzz.npy") {
        Ok(array) => {
            assert_eq!(array.data.len(), array.shape.iter().product::<usize>());
            let again = npy::decode(&npy::encode(&array.shape, &array.data), "again.npy").expect("an encoded array decodes");
            assert_eq!(again.shape, array.shape);
            assert!(again.data.iter().zip(&array.data).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        Err(e) => assert!(e.to_string().contains("noise/fuzz.npy"), "{e}"),
    }
});
