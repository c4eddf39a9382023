/*
 * replay_main.c: runs the fuzz target over saved inputs without libFuzzer, so every `make check`
 * replays the seed corpus and past crashers. Arguments are directories (every regular file in
 * them, in name order) or single files. Prints TAP: one "ok N - file" per input, then the plan.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct name_list {
    char **names;
    size_t n;
    size_t cap;
};

static int test_number;
static int failures;

static void report(int passed, const char *path, const char *why)
{
    test_number++;
    if (passed) {
        printf("ok %d - %s\n", test_number, path);
    } else {
        printf("not ok %d - %s # %s\n", test_number, path, why);
        failures++;
    }
    fflush(stdout);
}

/* Reads a whole file into a block of exactly its size, so overreads are caught by ASan. */
static uint8_t *read_whole_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    uint8_t *data;

    if (f == NULL)
        return NULL;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
        fclose(f);
        return NULL;
    }
    *size = (size_t)st.st_size;
    data = malloc(*size ? *size : 1);
    if (data != NULL && *size > 0 && fread(data, 1, *size, f) != *size) {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

static void replay_file(const char *path)
{
    size_t size = 0;
    uint8_t *data = read_whole_file(path, &size);

    if (data == NULL) {
        report(0, path, strerror(errno ? errno : EIO));
        return;
    }
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    report(1, path, NULL);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_name(struct name_list *list, const char *name)
{
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 64;
        char **grown = realloc(list->names, cap * sizeof(*grown));

        if (grown == NULL)
            return -1;
        list->names = grown;
        list->cap = cap;
    }
    list->names[list->n] = strdup(name);
    if (list->names[list->n] == NULL)
        return -1;
    list->n++;
    return 0;
}

static void replay_directory(const char *dir_path)
{
    DIR *dir = opendir(dir_path);
    struct name_list list = { NULL, 0, 0 };
    struct dirent *entry;
    char path[4096];
    struct stat st;

    if (dir == NULL) {
        report(0, dir_path, strerror(errno));
        return;
    }
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        if (add_name(&list, entry->d_name) != 0) {
            report(0, dir_path, "out of memory");
            break;
        }
    }
    closedir(dir);
    qsort(list.names, list.n, sizeof(*list.names), compare_names);
    for (size_t i = 0; i < list.n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir_path, list.names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            replay_file(path);
        free(list.names[i]);
    }
    free(list.names);
}

int main(int argc, char **argv)
{
    struct stat st;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (stat(argv[i], &st) != 0)
            report(0, argv[i], strerror(errno));
        else if (S_ISDIR(st.st_mode))
            replay_directory(argv[i]);
        else
            replay_file(argv[i]);
    }
    if (test_number == 0)
        report(0, "corpus", "no input files found");
    printf("1..%d\n", test_number);
    return failures ? 1 : 0;
}
