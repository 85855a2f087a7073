// Bridges between shard records and images: every image tool reads a record
// (encoded file bytes or u8 pixels) as an RGB image and writes pixels back.
#ifndef FU_IMAGE_RECORD_IMAGE_H
#define FU_IMAGE_RECORD_IMAGE_H

#include "image/image.h"
#include "shard/shard.h"

// Decode an encoded record, or copy a pixel record, into an RGB image.
// Messages carry no subject: callers name the record (fu_map_run does).
// min_side as in fu_decode (0 = exact full-size decode).
int fu_record_to_image(const fu_record *rec, uint32_t min_side, fu_image *out);

// A pixel record that points at `im` and carries in's id, label and split.
fu_record fu_image_record(const fu_record *in, const fu_image *im);

#endif
