/* Writes through a null pointer: the sandbox's process must die of SIGSEGV. */
#include <stdio.h>
int main(void) {
  puts("before");
  fflush(stdout);
  *(volatile int *)0 = 1;
  puts("after");
  return 0;
}
