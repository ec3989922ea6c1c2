//! Test fixture: exports `decide: func(x: u32) -> u32`, not the policy world.
wit_bindgen::generate!({
    inline: "package test:other; world other { export decide: func(x: u32) -> u32; }",
});

struct Other;

impl Guest for Other {
    fn decide(x: u32) -> u32 {
        x + 1
    }
}

export!(Other);
