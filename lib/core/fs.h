// Folders for tools that write more than one file.
#ifndef FU_CORE_FS_H
#define FU_CORE_FS_H

// mkdir -p: creates `path` and any missing parents. Each folder it creates is
// passed to `made` (when not NULL), outermost first, so a caller can remove
// them again after a later failure. Fails if `path` exists and is not a folder.
int fu_make_dirs(const char *path, void (*made)(const char *dir, void *ctx), void *ctx);

#endif
