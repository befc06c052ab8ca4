/* A static-PIE program (ET_DYN without an interpreter): the loader relocates
 * it to its load bias; it prints where main landed and exits 3. */
#include <stdio.h>
int main(void) {
  printf("pie main at %p\n", (void *)main);
  return 3;
}
