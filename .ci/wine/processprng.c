/* A stand-in bcryptprimitives.dll for wine 8, which lacks it: Rust's std (1.78+) imports
 * ProcessPrng from it to seed its hash maps, so without it every Rust program built for
 * x86_64-pc-windows-gnu exits at start ("Library bcryptprimitives.dll not found").
 * ProcessPrng fills a buffer with random bytes and always succeeds; RtlGenRandom
 * (advapi32's SystemFunction036) does the same. Built by .ci/wine-test with mingw-w64:
 *   x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll processprng.c -ladvapi32
 * Only for CI under wine; never shipped. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
